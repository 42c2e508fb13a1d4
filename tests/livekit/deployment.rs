//! A LiveKit deployment in the test's namespace: Redis with a password, coturn as the operator
//! configures it, and two livekit-server nodes sharing the Redis, one on each address, each
//! handing coturn to its clients. Started together, then each awaited with a deadline.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::config::{self, Node, Secrets, Turn};
use super::daemon::Daemon;
use super::token::Grant;

pub struct Deployment {
    pub dir: PathBuf,
    pub secrets: Secrets,
    pub nodes: [Node; 2],
    /// Each node's ID, as it logged it at start.
    pub node_ids: Vec<String>,
    pub redis_addr: SocketAddr,
    pub turn_addr: SocketAddr,
    pub turn_ttl: u32,
    pub redis: Daemon,
    pub coturn: Daemon,
    pub servers: Vec<Daemon>,
}

/// What the deployment is made of.
pub struct Plan<'a> {
    /// livekit-server and lkclient.
    pub bin: &'a Path,
    /// The two nodes' addresses; Redis and coturn listen on the first.
    pub ips: [Ipv4Addr; 2],
    /// Denied to TURN besides the defaults, as a cluster's private node range is; the nodes'
    /// own addresses are then allowed explicitly.
    pub node_range: &'a str,
    pub turn_ttl: u32,
}

fn command<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// The node ID livekit-server logs when it starts.
fn node_id(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("starting LiveKit server"))?;
    let rest = line.split("\"nodeID\": \"").nth(1)?;
    Some(rest.split('"').next()?.to_owned())
}

impl Deployment {
    pub fn start(dir: &Path, plan: &Plan<'_>) -> Deployment {
        let secrets = Secrets::generate();
        let [ip_a, ip_b] = plan.ips;

        let redis_addr = SocketAddr::from((ip_a, 6379));
        let redis_conf = dir.join("redis.conf");
        config::write_private(
            &redis_conf,
            &config::redis_conf(redis_addr, dir, &secrets.redis_password),
        );
        let redis = Daemon::start("redis", command("redis-server", &[&redis_conf]), dir);

        let turn_addr = SocketAddr::from((ip_a, config::turn_port()));
        let turn_conf = dir.join("turnserver.conf");
        let coturn_conf = config::coturn_conf(dir, ip_a, plan.node_range, &plan.ips, &secrets.turn_secret);
        config::write_private(&turn_conf, &coturn_conf);
        let coturn = Daemon::start(
            "coturn",
            command("turnserver", &["-c".as_ref(), turn_conf.as_os_str()]),
            dir,
        );

        let secret_file = dir.join("turn-secret");
        config::write_private(&secret_file, &secrets.turn_secret);
        let turn = Turn {
            host: ip_a,
            port: turn_addr.port(),
            ttl_seconds: plan.turn_ttl,
            secret_file,
        };
        let nodes = [
            Node {
                name: "livekit-a",
                ip: ip_a,
                http_port: 7880,
                tcp_port: 7881,
                udp_port: 7882,
            },
            Node {
                name: "livekit-b",
                ip: ip_b,
                http_port: 7890,
                tcp_port: 7891,
                udp_port: 7892,
            },
        ];
        let servers = nodes
            .iter()
            .map(|n| {
                let yaml = config::livekit_yaml(n, redis_addr, &turn);
                println!("---- {} config ----\n{yaml}", n.name);
                let path = dir.join(format!("{}.yaml", n.name));
                std::fs::write(&path, yaml).expect("write livekit config");
                let cmd = config::livekit_command(&plan.bin.join("livekit-server"), &path, &secrets);
                Daemon::start(n.name, cmd, dir)
            })
            .collect();
        let mut d = Deployment {
            dir: dir.to_owned(),
            secrets,
            nodes,
            node_ids: Vec::new(),
            redis_addr,
            turn_addr,
            turn_ttl: plan.turn_ttl,
            redis,
            coturn,
            servers,
        };
        d.redis.wait_tcp(redis_addr, Duration::from_secs(20));
        d.coturn.wait_tcp(turn_addr, Duration::from_secs(20));
        for (server, node) in d.servers.iter_mut().zip(&d.nodes) {
            server.wait_http_ok(node.http_addr(), "/", Duration::from_secs(30));
            let log = server.log();
            let id = node_id(&log).unwrap_or_else(|| panic!("{} logged no node ID:\n{log}", node.name));
            d.node_ids.push(id);
        }
        d
    }

    /// Signs `grant` with the deployment's API key and secret.
    pub fn sign(&self, grant: &Grant<'_>) -> String {
        grant.sign(&self.secrets.api_key, &self.secrets.api_secret)
    }

    /// Panics with its log if any program has exited.
    pub fn assert_running(&mut self) {
        self.redis.assert_running();
        self.coturn.assert_running();
        for s in &mut self.servers {
            s.assert_running();
        }
    }
}
