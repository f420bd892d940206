use crate::DnsError;

/// The largest DNS message: what TCP's 2-octet length prefix can say, and
/// more than a UDP datagram's payload.
pub const MAX_MESSAGE_LEN: usize = 65_535;

/// How a DNS message travels: alone in a UDP datagram, or after a 2-octet
/// big-endian length on a TCP stream (RFC 1035 4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One message per datagram.
    Udp,
    /// Each message after its length.
    Tcp,
}

/// The first whole message of a TCP stream's buffer and the octets it
/// takes with its prefix; `None` until the buffer holds one. A stream
/// reader calls it until `None`, dropping the consumed octets each time.
pub fn split_tcp_message(buffer: &[u8]) -> Option<(&[u8], usize)> {
    let [hi, lo, rest @ ..] = buffer else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    rest.get(..len).map(|message| (message, len + 2))
}

/// `message` as it is sent over `transport`: as is over UDP, after its
/// length over TCP.
pub fn frame(message: &[u8], transport: Transport) -> Result<Vec<u8>, DnsError> {
    let len = u16::try_from(message.len()).map_err(|_| DnsError::TooLarge {
        len: message.len(),
        max: MAX_MESSAGE_LEN,
    })?;
    Ok(match transport {
        Transport::Udp => message.to_vec(),
        Transport::Tcp => {
            let mut out = Vec::with_capacity(message.len() + 2);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(message);
            out
        }
    })
}

/// The message of `bytes`: all of them over UDP; over TCP, exactly one
/// framed message.
pub(crate) fn unframe(bytes: &[u8], transport: Transport, max: usize) -> Result<&[u8], DnsError> {
    let message = match transport {
        Transport::Udp => bytes,
        Transport::Tcp => {
            let declared = match bytes {
                [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
                _ => {
                    return Err(DnsError::Frame {
                        declared: 0,
                        actual: bytes.len(),
                    });
                }
            };
            let body = &bytes[2..];
            if body.len() != declared {
                return Err(DnsError::Frame {
                    declared,
                    actual: body.len(),
                });
            }
            body
        }
    };
    let max = max.min(MAX_MESSAGE_LEN);
    if message.len() > max {
        return Err(DnsError::TooLarge {
            len: message.len(),
            max,
        });
    }
    Ok(message)
}
