//! A container's file system as the image and the pod give it, so each image's own s6 scripts
//! run unchanged, at the image's own paths: a root directory assembled from the host's `/usr`
//! and `/etc` (Debian's nginx and prosody stand in for the image's packages), the image's
//! `rootfs` parts from docker-jitsi-meet (`/defaults`, the s6 scripts, prosody's plugins), the
//! base image's tools (`tpl`, `check-writable`), and the pod's volumes as the operator declares
//! them (emptyDirs world-writable as the kubelet makes them, ConfigMap files). Processes run
//! `chroot`ed into it as uid 1000, the images' user, with exactly the container's environment.
//!
//! Only runs inside the test's private mount namespace: every mount disappears with it.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::operator::Pod;
use super::seccomp;
use super::tools::Tools;

/// The images' user (`s6` in docker-jitsi-meet's base image).
pub const UID: u32 = 1000;
/// `PATH` in the images: Debian's, plus the directory standing in for the base image's
/// `/usr/bin/tpl` and `/usr/bin/check-writable`.
const PATH: &str = "/image-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `ENV` of docker-jitsi-meet's base image (base/Dockerfile).
const IMAGE_ENV: &[(&str, &str)] = &[("S6_BEHAVIOUR_IF_STAGE2_FAILS", "2"), ("S6_READ_ONLY_ROOT", "1")];

/// How long a server may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// One start of a server.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Start {
    pub listening: bool,
    /// The server's own output (the images log to stdout and stderr).
    pub log: String,
}

/// A running server, stopped (SIGTERM, then reaped) when dropped.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM: nginx's master stops its workers (which hold the listening socket) before it
        // exits; prosody shuts down cleanly. SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

pub struct Root {
    pub dir: PathBuf,
    image: String,
    env: Vec<(String, String)>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn bind(src: &Path, dst: &Path, read_only: bool) {
    run(Command::new("mount").arg("--rbind").arg(src).arg(dst));
    if read_only {
        run(Command::new("mount").args(["-o", "remount,bind,ro"]).arg(dst));
    }
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The directory holding the base image's tools, shared by every root (made once).
pub fn image_bin(work: &Path, tools: &Tools) -> PathBuf {
    let dir = work.join("image-bin");
    if !dir.exists() {
        mkdir(&dir, 0o755);
        fs::copy(&tools.tpl, dir.join("tpl")).expect("copy tpl");
        fs::copy(
            tools.djm.join("base/rootfs/usr/bin/check-writable"),
            dir.join("check-writable"),
        )
        .expect("copy check-writable");
        for f in ["tpl", "check-writable"] {
            fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }
    dir
}

impl Root {
    /// Assembles the file system `pod` starts with, under `dir`, with `resolv_conf` as the pod's
    /// `/etc/resolv.conf` (what the kubelet writes: cluster DNS and the search list).
    pub fn assemble(dir: PathBuf, tools: &Tools, image_bin: &Path, pod: &Pod, resolv_conf: &Path) -> Root {
        mkdir(&dir, 0o755);
        // The host's system, read-only.
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc"] {
            let host = Path::new("/").join(top);
            let Ok(meta) = fs::symlink_metadata(&host) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                symlink(fs::read_link(&host).expect("readlink"), dir.join(top)).expect("symlink");
            } else {
                mkdir(&dir.join(top), 0o755);
                bind(&host, &dir.join(top), true);
            }
        }
        mkdir(&dir.join("dev"), 0o755);
        bind(Path::new("/dev"), &dir.join("dev"), false);
        mkdir(&dir.join("proc"), 0o555);
        run(Command::new("mount").args(["-t", "proc", "proc"]).arg(dir.join("proc")));
        bind(resolv_conf, &dir.join("etc/resolv.conf"), true);

        // The image: base tools, its defaults and s6 scripts, the directories its Dockerfile makes.
        let image = tools.djm.join(&pod.image).join("rootfs");
        for (src, dst) in [
            (image_bin.to_path_buf(), "image-bin"),
            (image.join("defaults"), "defaults"),
            (image.join("etc/s6-overlay"), "s6-overlay"),
        ] {
            mkdir(&dir.join(dst), 0o755);
            bind(&src, &dir.join(dst), true);
        }
        mkdir(&dir.join("home/s6"), 0o755);
        std::os::unix::fs::chown(dir.join("home/s6"), Some(UID), Some(UID)).expect("chown");
        mkdir(&dir.join("var/lib"), 0o755);
        mkdir(&dir.join("var/log"), 0o755);
        match pod.image.as_str() {
            "web" => {
                // web/Dockerfile: `ln -s /run/web/tmp /var/lib/nginx`; the package's log directory.
                symlink("/run/web/tmp", dir.join("var/lib/nginx")).expect("symlink");
                mkdir(&dir.join("var/log/nginx"), 0o755);
            }
            "prosody" => {
                mkdir(&dir.join("prosody-plugins"), 0o755);
                bind(&image.join("prosody-plugins"), &dir.join("prosody-plugins"), true);
                // Volumes and the contrib plugins of the image; empty here (see the report).
                mkdir(&dir.join("prosody-plugins-contrib"), 0o755);
                mkdir(&dir.join("prosody-plugins-custom"), 0o755);
                mkdir(&dir.join("var/lib/prosody"), 0o755);
            }
            _ => {}
        }

        // The pod's volumes, as the kubelet provides them.
        for d in &pod.empty_dirs {
            let path = dir.join(d.trim_start_matches('/'));
            mkdir(&path, 0o777);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        for (path, content) in &pod.files {
            let host = dir.join(path.trim_start_matches('/'));
            mkdir(host.parent().expect("parent"), 0o755);
            fs::write(&host, content).unwrap_or_else(|e| panic!("write {}: {e}", host.display()));
        }
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), PATH.into()),
            ("HOSTNAME".into(), pod.name.clone()),
            ("HOME".into(), "/home/s6".into()),
        ];
        env.extend(IMAGE_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env.extend(pod.env.iter().cloned());
        Root {
            dir,
            image: pod.image.clone(),
            env,
        }
    }

    /// The host path of `path` in the container.
    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }

    /// Reads a file the container wrote.
    pub fn read(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.path(path)).ok()
    }

    /// A command that runs `argv` in the container, as its user, with its environment only.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("chroot");
        cmd.arg(&self.dir);
        // As the pod's security context has it: uid and gid 1000, no capabilities (setuid from
        // root clears them), no privilege escalation.
        cmd.arg("setpriv")
            .arg(format!("--reuid={UID}"))
            .arg(format!("--regid={UID}"))
            .args(["--clear-groups", "--no-new-privs"]);
        cmd.args(["env", "-i"]);
        cmd.args(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        cmd.args(argv);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs the image's init script, `/etc/s6-overlay/scripts/config` in the image (the s6-rc
    /// `10-config` oneshot of every Jitsi image).
    pub fn init(&self) -> Output {
        self.command(&["bash", "/s6-overlay/scripts/config"])
            .output()
            .unwrap_or_else(|e| panic!("{}: running the init script: {e}", self.image))
    }

    /// Starts an image's s6 run script (the chain of `exec`s makes the server this child), with
    /// its output in `log`; returns it once `addr` accepts connections, or its output if it
    /// exits or does not listen in time.
    pub fn start(&self, script: &str, log: &str, addr: SocketAddr, without_ipv6: bool) -> (Option<Server>, Start) {
        let out = self.log_file(log);
        let err = out.try_clone().expect("clone log");
        let mut cmd = self.command(&["bash", script]);
        cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        if without_ipv6 {
            seccomp::without_ipv6(&mut cmd);
        }
        let mut server = Server(cmd.spawn().unwrap_or_else(|e| panic!("{script}: {e}")));
        let deadline = Instant::now() + START_DEADLINE;
        let listening = loop {
            if matches!(server.0.try_wait(), Ok(Some(_))) {
                break false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            // Poll again: the servers signal readiness only by listening.
            std::thread::sleep(Duration::from_millis(50));
        };
        if !listening {
            drop(server);
            return (
                None,
                Start {
                    listening,
                    log: self.read(log).unwrap_or_default(),
                },
            );
        }
        (
            Some(server),
            Start {
                listening,
                log: self.read(log).unwrap_or_default(),
            },
        )
    }

    /// A file the container's user may write, for a long-running process's output (nginx reopens
    /// `/dev/stdout` as itself, so its stdout must be a file it owns, as in the image).
    pub fn log_file(&self, path: &str) -> fs::File {
        let host = self.path(path);
        let f = fs::File::create(&host).expect("create log");
        fs::set_permissions(&host, fs::Permissions::from_mode(0o666)).expect("chmod");
        f
    }
}

/// Whether this process is root of the initial user namespace (not a mapped root).
pub fn real_root() -> bool {
    fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
        .unwrap_or(false)
}
