"""Process 1 of a sandbox (tasks/common/sandbox.py): builds the sample's view of the machine, runs the sample
as its child, reports how it ended. Run as `python -I -S sandbox_init.py SPEC STATUS_FD` (SPEC: a
marshalled dict, in hex) by `unshare` (backends root and userns: inside new mount, PID, network and IPC
namespaces, with every capability there) or directly (backend none). Standard library only: it runs under
the interpreter of whoever calls the sandbox.

The view, in order (every mount lives and dies with the mount namespace; the host never sees one):
1. a fresh /proc for the new PID namespace (the host's processes, and their environments, out of sight); a
   container that masks parts of its /proc forbids that, and then an empty /proc hides the host's instead;
2. a private, size-capped tmpfs as /tmp, /var/tmp, /dev/shm and /run/lock, holding main.py;
3. empty tmpfs over the caller's home and over folders others cannot enter (a pyenv under /root), with the
   interpreter bound back: the sample sees neither the user's files nor their tokens;
4. every other mount read-only (mount_setattr, or one remount per mount on kernels before 5.12), so neither
   the user's files nor world-writable folders can be changed, whatever uid the sample has.
Then the child: a new session, rlimits (CPU, address space, file size, processes, no core files), no
capabilities and no way to regain any (an emptied bounding set, securebits, no_new_privs), under root a
fresh uid and no groups, an environment from the caller's allow-list. This process stays pid 1 (a sample
would be a poor init: it would ignore SIGXCPU) and makes itself non-dumpable, so the sample, which may share
its uid, cannot ptrace its way to the namespace's capabilities. When the sample exits, whatever it left
running is counted (a fork bomb that swallows its failed forks exits 0: that must not read as a pass); then
this process exits and the kernel kills everything else in the namespace.

The report, one JSON line on the status file descriptor: {"returncode", "left_running", "refused" (forks and
threads the process limit refused, as the sample's interpreter noted them on fd 3), "proc"}; set-up
failures go to stderr prefixed "sandbox-init:" with exit status 125 and no report. It starts once per
sample, so it imports only what it must (no json, no contextlib: ~10 ms a sample on a busy machine).
"""

import ctypes
import marshal
import os
import resource
import sys

LIBC = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC = (
    1,
    2,
    4,
    8,
    32,
    4096,
    8192,
    16384,
)
MS_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024,
            "nodiratime": 2048, "relatime": 1 << 21, "nosymfollow": 256}  # fmt: skip
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, SYS_MOUNT_SETATTR = -100, 0x8000, 1, 442  # x86_64 and aarch64
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS = 4, 24, 28, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
REFUSALS_FD = 3
NO_ROOT_PRIVILEGES = 0x23  # SECBIT_NOROOT + its lock, keep_caps locked off (capabilities(7))


class MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def check(result: int, what: str) -> None:

    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    args = [source.encode(), target.encode(), fstype and fstype.encode(), flags, data and data.encode()]
    check(LIBC.mount(*args), f"mount {fstype or source} on {target}")


def set_readonly(path: str, recursive: bool, readonly: bool = True) -> None:
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0) if readonly else MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    if LIBC.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), 32) == 0:
        return
    if ctypes.get_errno() != 38:  # ENOSYS: a kernel before 5.12
        check(-1, f"mount_setattr {path}")
    for point, options in mounts() if recursive else [(path, mount_options(path))]:
        kept = sum(MS_FLAGS.get(o, 0) for o in options) & ~MS_RDONLY  # locked flags must be restated
        mount("none", point, None, MS_REMOUNT | MS_BIND | kept | (MS_RDONLY if readonly else 0))


def mounts() -> list[tuple[str, list[str]]]:
    """(mount point, per-mount options) of this namespace, parents before children."""
    with open("/proc/self/mountinfo") as f:
        fields = [line.split() for line in f]
    return [(unescape(f[4]), f[5].split(",")) for f in fields]


def mount_options(path: str) -> list[str]:
    return next(options for point, options in reversed(mounts()) if point == path)


def unescape(path: str) -> str:
    return path.encode().decode("unicode_escape")  # mountinfo writes space, tab, newline, \ as octal


def build_view(spec: dict) -> str:
    """The sample's file system (module docstring); returns how /proc came out: 'own' or 'hidden'."""
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        proc = "own"
    except OSError:
        mount("sandbox", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=555")
        proc = "hidden"
    stage, uid = spec["stage"], spec["uid"]
    tmp = os.path.join(stage, "tmp")
    mount("sandbox", tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['disk_mb']}m,mode=1777")
    work = os.path.join(tmp, "work")
    os.mkdir(work, 0o700)
    with open(os.path.join(stage, "main.py"), "rb") as src, open(os.path.join(work, "main.py"), "wb") as dst:
        dst.write(src.read())
    if uid is not None:
        for path in (work, os.path.join(work, "main.py")):
            os.chown(path, uid, uid)
    kept = spec["bind_back"]  # installs that a tmpfs below would hide, parked in the new /tmp meanwhile
    for n, path in enumerate(kept):
        os.mkdir(os.path.join(tmp, f".i{n}"))
        mount(path, os.path.join(tmp, f".i{n}"), None, MS_BIND | MS_REC)
    # moved before anything is hidden: the staging folder may itself be under the caller's home ($TMPDIR)
    mount(tmp, "/tmp", None, MS_MOVE)
    for top in spec["hide"]:
        mount("sandbox", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for n, path in enumerate(kept):
        os.makedirs(path, exist_ok=True)
        mount(f"/tmp/.i{n}", path, None, MS_MOVE)
        os.rmdir(f"/tmp/.i{n}")
    scratch = ["/tmp"] + [d for d in ("/var/tmp", "/dev/shm", "/run/lock") if os.path.isdir(d)]
    for d in scratch[1:]:
        mount("/tmp", d, None, MS_BIND)
    set_readonly("/", recursive=True)
    for d in scratch:
        set_readonly(d, recursive=False, readonly=False)
    return proc


def drop_privileges(uid: int | None) -> None:
    """In the child, before exec: no capability survives the exec, none can come back."""
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read()) if os.path.exists("/proc/sys") else 63
    for cap in range(last_cap + 1):
        LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last: harmless
    LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # leaving uid 0 clears every capability
    else:
        check(LIBC.prctl(PR_SET_SECUREBITS, NO_ROOT_PRIVILEGES, 0, 0, 0), "securebits")
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def start_sample(spec: dict, status_fd: int, refusals: tuple[int, int]) -> int:
    pid = os.fork()
    if pid:
        os.close(refusals[1])
        return pid
    try:
        os.close(status_fd)
        os.close(refusals[0])
        os.dup2(refusals[1], REFUSALS_FD)  # inheritable: the sample's BOOT notes refused forks there
        if spec["isolated"]:
            os.setsid()  # unisolated, it stays in the caller's process group: the caller kills that group
        for name, (soft, hard) in spec["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if spec["isolated"]:
            drop_privileges(spec["uid"])
        os.chdir(spec["cwd"])
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except BaseException as e:  # whatever it was, the child must not return into init's code
        os.write(2, f"sandbox-init: starting the sample: {e}\n".encode())
    os._exit(125)


def live_processes() -> int:
    """Processes in this PID namespace other than this one, zombies not counted."""
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit() and name != "1":
            try:
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            n += state not in ("Z", "X")
    return n


def main() -> int:
    spec, status_fd = marshal.loads(bytes.fromhex(sys.argv[1])), int(sys.argv[2])
    try:
        proc = "host"
        if spec["isolated"]:
            LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            proc = build_view(spec)
        refusals = os.pipe()
        os.set_blocking(refusals[0], False)
        pid = start_sample(spec, status_fd, refusals)
    except OSError as e:
        print(f"sandbox-init: {e}", file=sys.stderr)
        return 125
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    rc = 128 - rc if rc < 0 else rc
    left = live_processes() if proc == "own" else None
    refused = 0
    try:  # leftover children still hold the write end: read what is there
        while chunk := os.read(refusals[0], 65536):
            refused += len(chunk)
    except BlockingIOError:
        pass
    left_json = "null" if left is None else left
    report = f'{{"returncode": {rc}, "left_running": {left_json}, "refused": {refused}, "proc": "{proc}"}}\n'
    os.write(status_fd, report.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
