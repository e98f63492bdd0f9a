import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The HTTP side: GET /metrics scrapes, GET / is a landing page, anything else 404. The request's path
/// only picks the page: nothing from the request reaches the evaluator.
public final class MetricsServer: @unchecked Sendable {
    let collector: Collector
    /// One scrape at a time (the collector and its evaluator are not thread-safe).
    let lock = NIOLock()

    public init(collector: Collector) { self.collector = collector }

    func scrape() -> String { lock.withLock { TextFormat.render(collector.collect()) } }

    static let landing = """
        <html><head><title>kreach exporter</title></head><body><h1>kreach exporter</h1>
        <p>Kernel values read from the expressions of the config.</p><p><a href="/metrics">Metrics</a></p></body></html>

        """

    /// Binds `host:port` and serves until the process ends; `onBound` gets the bound port (0 picks one).
    public func run(host: String, port: Int, onBound: (Int) -> Void) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(HTTPHandler(server: self))
                }
            }
        let channel = try bootstrap.bind(host: host, port: port).wait()
        onBound(channel.localAddress?.port ?? port)
        try channel.closeFuture.wait()
        try group.syncShutdownGracefully()
    }
}

final class HTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let server: MetricsServer
    var head: HTTPRequestHead?

    init(server: MetricsServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context: context, head)
        }
    }

    func respond(context: ChannelHandlerContext, _ request: HTTPRequestHead) {
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        let status: HTTPResponseStatus, type: String, body: String
        if request.method != .GET && request.method != .HEAD {
            (status, type, body) = (.methodNotAllowed, "text/plain; charset=utf-8", "only GET\n")
        } else if path == "/metrics" {
            (status, type, body) = (.ok, TextFormat.contentType, server.scrape())
        } else if path == "/" {
            (status, type, body) = (.ok, "text/html; charset=utf-8", MetricsServer.landing)
        } else {
            (status, type, body) = (.notFound, "text/plain; charset=utf-8", "not found\n")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method == .GET {
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let promise: EventLoopPromise<Void>? = keepAlive ? nil : context.eventLoop.makePromise()
        if let promise { promise.futureResult.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: promise)
    }
}
