//! Capability flags exchanged in the greeting and the client's first packet.

/// The capability flags of the connection phase (lower 32 bits as MySQL
/// defines them; MariaDB's extended capabilities travel separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// Bit 0. MariaDB servers clear it to say "I am MariaDB and put extended
    /// capabilities in the last 4 reserved bytes of the greeting".
    pub const CLIENT_MYSQL: u32 = 1;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const COMPRESS: u32 = 1 << 5;
    pub const PROTOCOL_41: u32 = 1 << 9;
    /// Bit 11: the client wants TLS (SSLRequest) / the server offers it.
    pub const SSL: u32 = 1 << 11;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;

    pub fn has(self, flag: u32) -> bool {
        self.0 & flag != 0
    }
}
