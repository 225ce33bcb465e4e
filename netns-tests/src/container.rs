//! A "container": a bare network namespace that a router attaches.

use std::sync::Arc;

use crate::host::Host;
use crate::lab::Ctx;
use crate::netns::{AsNetns, Netns};

/// A container namespace (`<prefix>c<n>`), deleted on drop. Attach it with
/// `host.attach(&c, "10.2.1.1/24")` (= `weave-rs attach 10.2.1.1/24
/// /var/run/netns/<name>`); the router gives it an interface `ethwe`.
pub struct Container {
    host: String,
    ctx: Arc<Ctx>,
    ns: Netns,
}

impl AsNetns for Container {
    fn netns(&self) -> &Netns {
        &self.ns
    }
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "container {} on {}", self.ns.name(), self.host)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.ctx.dump_all_once();
        }
    }
}

impl Container {
    /// A new, empty container namespace meant for `host` (nothing is
    /// attached yet).
    #[track_caller]
    pub fn new(host: &Host) -> Container {
        let ctx = host.ctx().clone();
        let ns = Netns::create(&format!("{}c{}", ctx.prefix, ctx.next()));
        Container {
            host: host.name().to_string(),
            ctx,
            ns,
        }
    }

    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// `/var/run/netns/<name>`: the TARGET for `weave-rs attach`.
    pub fn path(&self) -> String {
        self.ns.path()
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Short name of the host it was made for.
    pub fn host_name(&self) -> &str {
        &self.host
    }
}
