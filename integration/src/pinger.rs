//! A `ping` from inside a network namespace that counts which echo
//! requests went unanswered: the measure of "no packet lost" across a
//! restart, a failover or a certificate rotation.

/// Pings every 100 ms and records which echo requests were answered.
pub struct Pinger {
    child: std::process::Child,
    replies: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    reader: Option<std::thread::JoinHandle<String>>,
}

impl Pinger {
    /// Starts `ping` from the named namespace `netns` to `to`.
    pub fn start(netns: &str, to: std::net::IpAddr) -> std::io::Result<Self> {
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", netns, "ping", "-n", "-i", "0.1", "-W", "1"])
            .arg(to.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let replies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped");
        let seen = replies.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut rest = String::new();
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(seq) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("icmp_seq="))
                    .and_then(|n| n.parse().ok())
                {
                    seen.lock().unwrap().push(seq);
                } else {
                    rest.push_str(&line);
                    rest.push('\n');
                }
            }
            rest
        });
        Ok(Self {
            child,
            replies,
            reader: Some(reader),
        })
    }

    /// The highest `icmp_seq` answered so far.
    pub fn last_reply(&self) -> u32 {
        self.replies
            .lock()
            .unwrap()
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Keeps pinging until 15 more requests (1.5 s, more than ping's 1 s
    /// reply timeout) were answered, then interrupts ping and returns the
    /// requests sent and those of them that went unanswered, leaving out
    /// the ones sent within ping's reply timeout before the interrupt (their
    /// replies may still be in flight).
    pub fn stop(mut self) -> (u32, Vec<u32>) {
        let target = self.last_reply() + 15;
        crate::wait_for("15 more ping replies", || self.last_reply() >= target);
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let text = self.reader.take().expect("reader").join().unwrap();
        let summary = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary in: {text}"));
        let sent: u32 = summary
            .split(|c: char| !c.is_ascii_digit())
            .find_map(|w| w.parse().ok())
            .expect("transmitted count");
        let replies = self.replies.lock().unwrap().clone();
        let settled = sent.saturating_sub(10);
        let lost = (1..=settled).filter(|s| !replies.contains(s)).collect();
        (sent, lost)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
