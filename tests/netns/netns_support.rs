//! The namespace helper itself: a namespace exists while held, veth links join two of them,
//! a thread can enter one, and dropping removes it.

use support::netns::{NetNs, require_root, veth};

#[test]
fn namespace_lifecycle_and_veth() {
    if !require_root("namespace_lifecycle_and_veth") {
        return;
    }
    let a = NetNs::new("sup");
    let b = NetNs::new("sup");
    assert_ne!(a.name(), b.name());
    veth(&a, "va", &b, "vb");
    a.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "va",
        "nodad",
    ]);
    b.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:1::2/64",
        "dev",
        "vb",
        "nodad",
    ]);
    let ping = a.try_exec(&["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::2"]);
    assert!(ping.status.success(), "ping across veth: {ping:?}");

    // A thread that entered `a` sees `va` and not the host's interfaces.
    let links = a.run_in(|| {
        std::fs::read_dir("/sys/class/net")
            .map(|d| d.count())
            .unwrap_or(0)
    });
    assert!(links >= 1);
    let name = a.name().to_string();
    let inside = a.run_in(|| {
        std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout
    });
    assert!(
        String::from_utf8_lossy(&inside).contains("va@"),
        "va visible inside {name}"
    );

    let path = a.path();
    drop(a);
    assert!(
        !std::path::Path::new(&path).exists(),
        "namespace removed on drop"
    );
}
