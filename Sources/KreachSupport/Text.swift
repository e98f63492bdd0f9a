extension StringProtocol {
    /// Without leading and trailing characters from `characters` (spaces by default).
    public func trimming(_ characters: String = " ") -> String {
        var s = Substring(self)
        while let c = s.first, characters.contains(c) { s = s.dropFirst() }
        while let c = s.last, characters.contains(c) { s = s.dropLast() }
        return String(s)
    }
}
