//! Where the running kernel keeps the listener fields a SYN-ACK depends on, read from its BTF
//! (/sys/kernel/btf/vmlinux), so the XDP program reads them at the right offsets on any kernel
//! build (`synguard_common::promise::KernelLayout`).
//!
//! Only what that needs of the format (Documentation/bpf/btf.rst): the type section's records,
//! with struct and union members resolved through typedefs and qualifiers. The crates that
//! parse BTF are either internal to aya or under a licence this project cannot take in.

use std::collections::VecDeque;

use synguard_common::promise::KernelLayout;

const BTF_MAGIC: u16 = 0xeb9f;

/// BTF kinds (include/uapi/linux/btf.h).
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    /// Offset in bits from the start of the enclosing struct.
    bit_offset: u32,
    /// Non-zero for a bitfield.
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name: String,
    /// Size in bytes (INT, STRUCT, UNION, ENUM) or the referenced type (PTR, TYPEDEF, ...).
    size_or_type: u32,
    members: Vec<Member>,
}

/// The kernel's types, indexed by BTF type id (id 0 is `void`).
pub struct Btf {
    types: Vec<Type>,
}

/// Why the layout could not be had; the XDP program then leaves SYNs to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read the kernel's BTF at {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel's BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("the kernel's struct {0} has no field {1} of {2} bytes")]
    NoField(String, String, usize),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    pub const VMLINUX: &'static str = "/sys/kernel/btf/vmlinux";

    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        let bytes = std::fs::read(Self::VMLINUX).map_err(|source| BtfError::Read {
            path: Self::VMLINUX.to_string(),
            source,
        })?;
        Btf::parse(&bytes)
    }

    /// Parses a little-endian BTF blob (the host's own byte order on every target synguard
    /// runs on).
    pub fn parse(b: &[u8]) -> Result<Btf, BtfError> {
        let bad = BtfError::Malformed;
        if u16_at(b, 0) != Some(BTF_MAGIC) {
            return Err(bad("bad magic"));
        }
        let hdr_len = u32_at(b, 4).ok_or(bad("short header"))? as usize;
        let field = |at| u32_at(b, at).ok_or(bad("short header")).map(|v| v as usize);
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        let types_at = hdr_len + type_off;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(bad("string section out of bounds"))?;
        let name = |off: u32| -> String {
            let rest = strings.get(off as usize..).unwrap_or_default();
            let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        };
        let section = b
            .get(types_at..types_at + type_len)
            .ok_or(bad("type section out of bounds"))?;
        let mut types = vec![Type {
            kind: 0,
            name: String::new(),
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < section.len() {
            let word = |i: usize| u32_at(section, at + 4 * i).ok_or(bad("truncated type"));
            let (name_off, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                kind::INT | kind::VAR | kind::DECL_TAG => 4,
                kind::ARRAY => 12,
                kind::STRUCT | kind::UNION => {
                    for m in 0..vlen {
                        let word = |i: usize| {
                            u32_at(section, at + 12 * m + 4 * i).ok_or(bad("truncated member"))
                        };
                        let offset = word(2)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0xff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name: name(word(0)?),
                            type_id: word(1)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    12 * vlen
                }
                kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
                kind::DATASEC | kind::ENUM64 => 12 * vlen,
                _ => 0,
            };
            at += extra;
            types.push(Type {
                kind,
                name: name(name_off),
                size_or_type,
                members,
            });
        }
        Ok(Btf { types })
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// The type behind typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// The size in bytes of a member's type when it is a scalar (int, enum, pointer) or a struct
    /// or union; `None` otherwise.
    fn scalar_size(&self, id: u32) -> Option<usize> {
        let t = self.resolve(id)?;
        match t.kind {
            kind::INT | kind::ENUM | kind::ENUM64 => Some(t.size_or_type as usize),
            kind::PTR => Some(8),
            // An address held as a struct (`struct in6_addr`).
            kind::STRUCT | kind::UNION => Some(t.size_or_type as usize),
            _ => None,
        }
    }

    /// The byte offset of `field` in `struct strukt`, looked for breadth-first through the
    /// struct and union members embedded in it (not through pointers), so a field of the
    /// struct itself wins over a namesake deeper down (`inet_sock.tos` over
    /// `inet_sock.cork.base.tos`). The field must be a whole-byte scalar, or a struct, of `size` bytes.
    pub fn field_offset(&self, strukt: &str, field: &str, size: usize) -> Result<u32, BtfError> {
        let root = self
            .types
            .iter()
            .position(|t| t.kind == kind::STRUCT && t.name == strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let missing = || BtfError::NoField(strukt.to_string(), field.to_string(), size);
        let mut queue = VecDeque::from([(root as u32, 0u32)]);
        while let Some((id, base)) = queue.pop_front() {
            let Some(t) = self.resolve(id) else { continue };
            for m in &t.members {
                let offset = base + m.bit_offset;
                if m.name == field {
                    if m.bitfield_size != 0
                        || offset % 8 != 0
                        || self.scalar_size(m.type_id) != Some(size)
                    {
                        return Err(missing());
                    }
                    return Ok(offset / 8);
                }
                if let Some(inner) = self.resolve(m.type_id)
                    && matches!(inner.kind, kind::STRUCT | kind::UNION)
                {
                    queue.push_back((m.type_id, offset));
                }
            }
        }
        Err(missing())
    }
}

/// Where the running kernel keeps the listener fields SYN-ACKs depend on, with an error an
/// operator can act on.
pub fn listener_layout() -> Result<KernelLayout, crate::Error> {
    Btf::from_sys_fs()
        .and_then(|btf| kernel_layout(&btf))
        .map_err(|e| {
            crate::Error::Other(format!(
                "{e}: synguard reads each listener's settings at the offsets the kernel's BTF \
                 gives, to answer SYNs exactly as the kernel would; it needs a kernel built with \
                 CONFIG_DEBUG_INFO_BTF (distribution kernels are)"
            ))
        })
}

/// The listener fields' offsets in the running kernel, for `LAYOUT_MAP`.
pub fn kernel_layout(btf: &Btf) -> Result<KernelLayout, BtfError> {
    // struct tcp_sock starts with inet_connection_sock, which starts with inet_sock, which
    // starts with sock: offsets into any of them are offsets into the tcp_sock.
    for (outer, inner) in [
        ("tcp_sock", "inet_connection_sock"),
        ("inet_connection_sock", "inet_sock"),
        ("inet_sock", "sock"),
        ("sock", "sock_common"),
        ("request_sock", "sock_common"),
    ] {
        let first = btf
            .types
            .iter()
            .find(|t| t.kind == kind::STRUCT && t.name == outer)
            .and_then(|t| t.members.first())
            .and_then(|m| {
                btf.resolve(m.type_id)
                    .map(|t| (m.bit_offset, t.name.as_str()))
            });
        if first != Some((0, inner)) {
            return Err(BtfError::Malformed("tcp_sock does not start with sock"));
        }
    }
    Ok(KernelLayout {
        ready: 1,
        sk_rcvbuf: btf.field_offset("sock", "sk_rcvbuf", 4)?,
        sk_userlocks: btf.field_offset("sock", "sk_userlocks", 1)?,
        inet_pinet6: btf.field_offset("inet_sock", "pinet6", 8)?,
        inet_uc_ttl: btf.field_offset("inet_sock", "uc_ttl", 2)?,
        inet_tos: btf.field_offset("inet_sock", "tos", 1)?,
        inet_pmtudisc: btf.field_offset("inet_sock", "pmtudisc", 1)?,
        tcp_window_clamp: btf.field_offset("tcp_sock", "window_clamp", 4)?,
        tcp_user_mss: btf.field_offset("tcp_sock", "user_mss", 2)?,
        tcp_scaling_ratio: btf.field_offset("tcp_sock", "scaling_ratio", 1)?,
        ipv6_hop_limit: btf.field_offset("ipv6_pinfo", "hop_limit", 2)?,
        ipv6_tclass: btf.field_offset("ipv6_pinfo", "tclass", 1)?,
        skc_family: btf.field_offset("sock_common", "skc_family", 2)?,
        skc_daddr: btf.field_offset("sock_common", "skc_daddr", 4)?,
        skc_v6_daddr: btf.field_offset("sock_common", "skc_v6_daddr", 16)?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: int, struct inner { u8 tos; }, struct outer { int a; struct inner in;
    /// u8 tos; } -- `tos` of outer itself must win over in.tos.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0u8\0inner\0outer\0tos\0a\0in\0".to_vec();
        let s = |name: &str| {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (4 bytes), 2: u8 (1 byte)
        push(&[s("int"), kind::INT << 24, 4, 32]);
        push(&[s("u8"), kind::INT << 24, 1, 8]);
        // 3: struct inner { u8 tos @0 }
        push(&[s("inner"), (kind::STRUCT << 24) | 1, 1, s("tos"), 2, 0]);
        // 4: struct outer { int a @0; struct inner in @32; u8 tos @40 }
        push(&[s("outer"), (kind::STRUCT << 24) | 3, 8]);
        push(&[s("a"), 1, 0, s("in"), 3, 32, s("tos"), 2, 40]);
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&types);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn the_shallowest_field_wins_and_sizes_are_checked() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.field_offset("outer", "tos", 1).unwrap(), 5);
        assert_eq!(btf.field_offset("inner", "tos", 1).unwrap(), 0);
        assert_eq!(btf.field_offset("outer", "a", 4).unwrap(), 0);
        assert!(btf.field_offset("outer", "a", 2).is_err(), "wrong size");
        assert!(btf.field_offset("outer", "b", 1).is_err());
        assert!(btf.field_offset("nothing", "a", 4).is_err());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut b = blob();
        b.truncate(40);
        assert!(Btf::parse(&b).is_err());
    }

    #[test]
    fn this_kernel_has_every_field() {
        // Every kernel synguard supports has BTF (CONFIG_DEBUG_INFO_BTF): the XDP program's
        // cookie helpers need it too.
        let layout = kernel_layout(&Btf::from_sys_fs().unwrap()).unwrap();
        assert_eq!(layout.ready, 1);
        assert!(layout.tcp_window_clamp > layout.sk_rcvbuf);
    }
}
