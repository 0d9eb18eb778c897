//! Capability flags exchanged in the greeting and the client's first packet.

/// The capability flags of the connection phase (lower 32 bits as MySQL
/// defines them; MariaDB's extended capabilities travel separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// Bit 0. MariaDB servers clear it to say "I am MariaDB and put extended
    /// capabilities in the last 4 reserved bytes of the greeting".
    pub const CLIENT_MYSQL: u32 = 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const COMPRESS: u32 = 1 << 5;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const PROTOCOL_41: u32 = 1 << 9;
    /// Bit 11: the client wants TLS (SSLRequest) / the server offers it.
    pub const SSL: u32 = 1 << 11;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;
    /// MySQL 8's zstd compression: a compressed framing like `COMPRESS`.
    pub const ZSTD_COMPRESSION: u32 = 1 << 26;

    /// Flags that change the bytes of the command phase once both sides
    /// agreed on them. A client must not believe one is on that the
    /// backend it reaches does not have (docs/design.md §3.9).
    pub const PROTOCOL_SHAPING: u32 = Self::COMPRESS
        | Self::PROTOCOL_41
        | Self::MULTI_RESULTS
        | Self::PS_MULTI_RESULTS
        | Self::SESSION_TRACK
        | Self::DEPRECATE_EOF
        | Self::ZSTD_COMPRESSION
        | (1 << 25) // MySQL 8 OPTIONAL_RESULTSET_METADATA
        | (1 << 27); // MySQL 8 QUERY_ATTRIBUTES

    pub fn has(self, flag: u32) -> bool {
        self.0 & flag != 0
    }
}
