import Glibc
import KreachSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The HTTP side: GET /metrics scrapes, GET / is a landing page, anything else 404. The request's path
/// only picks the page: nothing from the request reaches the evaluator.
public final class MetricsServer: @unchecked Sendable {
    /// Guarded by `lock`: replaced on reload.
    var collector: Collector
    /// One scrape at a time (the collector and its evaluator are not thread-safe).
    let lock = NIOLock()
    /// The open connections (guarded by `lock`), closed when the server stops.
    var handlers: [ObjectIdentifier: HTTPHandler] = [:]
    var stopping = false

    public init(collector: Collector) { self.collector = collector }

    /// Per metric, the error last written to stderr (guarded by `lock`).
    var loggedErrors: [String: String] = [:]

    /// One scrape; a metric's read error is written to stderr (the journal under systemd) when it differs from
    /// the one last written for that metric, so a failing metric is logged once, not at every scrape.
    func scrape() -> String {
        lock.withLock {
            let text = TextFormat.render(collector.collect())
            for (metric, message) in collector.lastErrors.sorted(by: { $0.key < $1.key }) where loggedErrors[metric] != message {
                loggedErrors[metric] = message
                StandardError.write("kreach export: \(metric): \(message)")
            }
            return text
        }
    }

    /// Serves `collector` from the next scrape on (a reloaded config); the memory reader is kept.
    public func replace(collector: Collector) { lock.withLock { self.collector = collector } }

    static let landing = """
        <html><head><title>kreach exporter</title></head><body><h1>kreach exporter</h1>
        <p>Kernel values read from the expressions of the config.</p><p><a href="/metrics">Metrics</a></p></body></html>

        """

    /// Binds `host:port` and serves until `stop` is called; `onBound` gets the bound port (0 picks one)
    /// and a `stop` function (safe from any thread) that closes the listener, lets the response being
    /// written finish, closes the connections and makes `run` return.
    public func run(host: String, port: Int, onBound: (_ port: Int, _ stop: @escaping @Sendable () -> Void) -> Void) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(HTTPHandler(server: self))
                }
            }
        let channel: Channel
        do { channel = try bootstrap.bind(host: host, port: port).wait() } catch {
            try? group.syncShutdownGracefully()
            let reason = (error as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(error)"
            throw ListenError(description: "can't listen on \(host):\(port): \(reason)")
        }
        let allClosed = channel.eventLoop.makePromise(of: Void.self)
        onBound(channel.localAddress?.port ?? port) { [self] in
            // On the event loop (one thread): after the scrape running there, if any, has written its response.
            channel.eventLoop.execute { [self] in
                let open = lock.withLock { stopping = true; return Array(handlers.values) }
                let closes = [channel.close()] + open.compactMap { $0.finishAndClose() }
                EventLoopFuture.andAllComplete(closes, on: channel.eventLoop).cascade(to: allClosed)
            }
        }
        try? allClosed.futureResult.wait()
        try group.syncShutdownGracefully()
    }
}

/// The address can't be bound (in use, not local, not permitted).
public struct ListenError: Error, CustomStringConvertible {
    public let description: String
}

final class HTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let server: MetricsServer
    var head: HTTPRequestHead?
    /// Event-loop state: the connection and the last response's write.
    var channel: Channel?
    var lastWrite: EventLoopFuture<Void>?

    init(server: MetricsServer) { self.server = server }

    func handlerAdded(context: ChannelHandlerContext) {
        channel = context.channel
        let stopping = server.lock.withLock {
            if !server.stopping { server.handlers[ObjectIdentifier(self)] = self }
            return server.stopping
        }
        if stopping { context.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        server.lock.withLock { _ = server.handlers.removeValue(forKey: ObjectIdentifier(self)) }
    }

    /// Closes the connection once the response being written (if any) is out; returns when it is closed.
    /// On the event loop (the server's one thread).
    func finishAndClose() -> EventLoopFuture<Void>? {
        guard let channel else { return nil }
        (lastWrite ?? channel.eventLoop.makeSucceededVoidFuture()).whenComplete { _ in channel.close(promise: nil) }
        return channel.closeFuture
    }

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
        let keepAlive = request.isKeepAlive && !server.lock.withLock { server.stopping }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method == .GET {
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let promise: EventLoopPromise<Void>? = keepAlive ? nil : context.eventLoop.makePromise()
        if let promise { promise.futureResult.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
        let written = context.eventLoop.makePromise(of: Void.self)
        if let promise { written.futureResult.cascade(to: promise) }
        lastWrite = written.futureResult
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
    }
}
