//! Frames for `BPF_PROG_TEST_RUN` (benchmarks and tests that run the
//! programs without interfaces).

use std::net::Ipv4Addr;

/// An Ethernet/IPv4/TCP SYN from `src:40000` to `dst:dport`, with a valid
/// IPv4 header checksum.
pub fn tcp_syn_frame(src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    tcp_syn_frame_from(src, 40000, dst, dport)
}

/// [`tcp_syn_frame`] from `src:sport` (a new connection per source port).
pub fn tcp_syn_frame_from(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(54);
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend_from_slice(&ip);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    p.extend_from_slice(&tcp);
    p
}
