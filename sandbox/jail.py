"""The fallback launcher's inside half, for hosts without bubblewrap: run as root by
`unshare` in new mount, PID, IPC, UTS, cgroup (and network) namespaces, it does what
bubblewrap would, with the standard library and ctypes only:

  builds the sandbox's filesystem (`sandbox.layout`) on a tmpfs and chroots into it;
  brings up the namespace's loopback; forks the run's process, which drops to the run's
  uid with no supplementary groups, an empty capability bounding set, no_new_privs and
  the seccomp filter, then execs the bootstrap; and, as the namespace's init, reaps
  until that process ends and exits with its status (128+N for signal N, as bwrap does).
  When it exits, the kernel kills whatever the run left in the namespace.

Usage (the host's `sandbox.process` builds it): jail.py PLAN_FD, the plan being JSON:
{root, mounts, uid, env, seccomp (hex), argv, loopback, info_fd}.
"""

import ctypes
import fcntl
import json
import os
import socket
import struct
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_SECCOMP, PR_CAPBSET_DROP = 1, 22, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
SECCOMP_MODE_FILTER = 2
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

libc = ctypes.CDLL(None, use_errno=True)


def check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def prctl(option, arg2, arg3=0):
    check(libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0), "prctl")


def bind(source, target, read_only=True):
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(source, target, None, MS_BIND)
    if read_only:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def tmpfs(target, mode, size):
    os.makedirs(target, exist_ok=True)
    options = f"mode={mode:o}" + (f",size={size}" if size else "")
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)


def build(root, mounts):
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    tmpfs(root, 0o755, 0)
    for m in mounts:
        target = root + m["target"]
        kind = m["kind"]
        if kind == "ro-bind" or (kind == "ro-bind-try" and os.path.exists(m["source"])):
            bind(m["source"], target)
        elif kind == "dir":
            os.makedirs(target, exist_ok=True)
            os.chmod(target, m["mode"])
        elif kind == "symlink":
            os.symlink(m["source"], target)
        elif kind == "tmpfs":
            tmpfs(target, m["mode"], m["size"])
        elif kind == "proc":
            os.makedirs(target, exist_ok=True)
            mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        elif kind == "dev":
            tmpfs(target, 0o755, 64 * 1024)
            for name in DEVICES:
                bind(f"/dev/{name}", f"{target}/{name}", read_only=False)
            os.symlink("/proc/self/fd", f"{target}/fd")
            for fd, name in enumerate(("stdin", "stdout", "stderr")):
                os.symlink(f"/proc/self/fd/{fd}", f"{target}/{name}")
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH", b"lo", 0) + b"\0" * 22  # struct ifreq: 40 bytes
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP) + b"\0" * 22)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def become_the_run(plan):
    """In the forked child: drop everything, install the filter, exec the bootstrap."""
    os.setsid()
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    uid = plan["uid"]
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    program = bytes.fromhex(plan["seccomp"])
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    os.execve(plan["argv"][0], plan["argv"], plan["env"])


def main():
    with os.fdopen(int(sys.argv[1])) as f:
        plan = json.load(f)
    prctl(PR_SET_PDEATHSIG, 9)  # unshare gone: so is the run
    # the host's /proc is still mounted here: /proc/self is this process's host PID, which
    # the host waits on to know the namespace has ended (the same JSON as bwrap --info-fd)
    os.write(plan["info_fd"], json.dumps({"child-pid": int(os.readlink("/proc/self"))}).encode())
    os.close(plan["info_fd"])
    build(plan["root"], plan["mounts"])
    if plan["loopback"]:
        loopback_up()
    os.chroot(plan["root"])
    os.chdir("/tmp")
    child = os.fork()
    if child == 0:
        try:
            become_the_run(plan)
        except BaseException as exc:
            print(f"jail: {exc}", file=sys.stderr)
        os._exit(127)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    try:
        main()
    except OSError as exc:
        print(f"jail: {exc}", file=sys.stderr)
        os._exit(1)
