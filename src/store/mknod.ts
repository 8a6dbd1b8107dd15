/**
 * MKNOD support: creates character/block device nodes, FIFOs and Unix sockets, which Node's `fs`
 * cannot (there is no fs.mknod). A diskless root needs its /dev nodes, so the server (running as
 * root) has to make them.
 *
 * Mechanism: a short python3 program run with child_process.execFile. Why not the others:
 *  - `mknod(1)`/`mkfifo(1)`: execFile's arguments and `cwd` are JS strings that Node encodes as
 *    UTF-8, so a name with bytes that are not UTF-8 (store paths are latin1 "byte strings", see
 *    fsops.ts) cannot be passed at all; the tools also report failures as localized text rather
 *    than errno values, and setting the setuid/setgid/sticky bits needs a separate chmod(1)
 *    that follows a symlink swapped in at the path.
 *  - a native addon: it would have to be built by an npm script on `npm ci` (package.json is not
 *    ours to change) and needs a compiler wherever the server is installed.
 *  - python3 (present on the machines) calls mknod(2)/bind(2) directly and takes paths as bytes:
 *    the path travels hex-encoded in argv, so every byte survives, and failures come back as
 *    errno names that go on the thrown Error's `code` (errors.ts maps them to nfsstat3).
 *
 * What the helper does, in order: umask(0); open the parent directory with O_PATH|O_DIRECTORY;
 * create the last component relative to that descriptor (mknodat for chr/blk/fifo; fchdir + bind
 * of an AF_UNIX socket with the relative name for sock, which also lifts the 108-byte sun_path
 * limit to the last component only). Creation never follows a symlink in the last component: the
 * kernel fails with EEXIST for anything already there, dangling symlinks included (bind says
 * EADDRINUSE, which we report as EEXIST). Then the new node is opened with O_PATH|O_NOFOLLOW
 * (this does not open the device), its type is checked with fstat, and the exact mode (incl.
 * setuid/setgid/sticky, which creation may drop) is applied with chmod through
 * /proc/self/fd/N, so the chmod hits the inode we created and never a symlink's target.
 *
 * Limits: each call costs one python3 start (~20-40 ms), so calls are capped at
 * MAX_CONCURRENT children at a time; each child is killed (SIGKILL) after TIMEOUT_MS and always
 * reaped by libuv (execFile waits for it), so no zombies remain. Device numbers are what
 * mknod(2) takes on Linux: major 0..4095, minor 0..0xfffff (others fail with EINVAL).
 * A missing python3 fails with ENOSYS (NFS3ERR_NOTSUPP), not ENOENT, so it does not look like a
 * missing parent directory.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';

export type NodeKind = 'chr' | 'blk' | 'fifo' | 'sock';

/** Number of makeNode calls (each is one child process); the store reports it beside fsCallCounts. */
export let mknodCalls = 0;

const TIMEOUT_MS = 10_000;
const MAX_CONCURRENT = 4;
const MAX_MAJOR = 0xfff;
const MAX_MINOR = 0xfffff;

// argv: hexpath kind octal-mode major minor. Exit 0: created; exit 3: stdout is "ENAME errno".
const HELPER = `
import errno, os, socket, stat, sys
def main():
    path = bytes.fromhex(sys.argv[1]); kind = sys.argv[2]
    perm = int(sys.argv[3], 8); major = int(sys.argv[4]); minor = int(sys.argv[5])
    fmt = {'chr': stat.S_IFCHR, 'blk': stat.S_IFBLK, 'fifo': stat.S_IFIFO, 'sock': stat.S_IFSOCK}[kind]
    os.umask(0)
    head, name = os.path.split(path)
    if name in (b'', b'.', b'..'):
        os.lstat(path)
        raise OSError(errno.EEXIST, 'exists')
    dfd = os.open(head or b'.', os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    if kind == 'sock':
        if len(name) > 107:
            raise OSError(errno.ENAMETOOLONG, 'socket name too long')
        os.fchdir(dfd)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(name)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise OSError(errno.EEXIST, 'exists')
            raise
        finally:
            s.close()
    else:
        os.mknod(name, fmt | (perm & 0o777), os.makedev(major, minor), dir_fd=dfd)
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    st = os.fstat(fd)
    if stat.S_IFMT(st.st_mode) != fmt:
        raise OSError(errno.EEXIST, 'replaced while being created')
    try:
        os.chmod('/proc/self/fd/%d' % fd, perm)
        if stat.S_IMODE(os.fstat(fd).st_mode) != perm:
            raise OSError(errno.EPERM, 'mode not applied')
    except OSError:
        try:
            if os.lstat(name, dir_fd=dfd).st_ino == st.st_ino:
                os.unlink(name, dir_fd=dfd)
        except OSError:
            pass
        raise
try:
    main()
except OSError as e:
    n = e.errno or errno.EIO
    sys.stdout.write('%s %d\\n' % (errno.errorcode.get(n, 'EIO'), n))
    sys.exit(3)
`;

let python: string | undefined;
function pythonPath(): string {
  // Prefer the system interpreter: a pyenv shim on PATH adds a bash start-up to every call.
  python ??= existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  return python;
}

let running = 0;
const waiting: Array<() => void> = [];

async function withSlot<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= MAX_CONCURRENT) await new Promise<void>((resolve) => waiting.push(resolve));
  else running++;
  try {
    return await fn();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else running--;
  }
}

function errnoError(code: string, errno: number, bytePath: string, syscall: string, detail?: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(
    `${code}: ${detail ?? 'mknod failed'}, ${syscall} ${JSON.stringify(bytePath)}`,
  );
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  err.path = bytePath;
  return err;
}

/**
 * Creates a `kind` node at `bytePath` (latin1 byte string) with exactly `mode & 0o7777`.
 * Fails with an Error whose `code` is the errno name (EEXIST if anything, even a dangling
 * symlink, is at the path; ENOENT/ENOTDIR/EACCES/ENAMETOOLONG as the kernel says; EINVAL for bad
 * arguments). `major`/`minor` are used for 'chr' and 'blk' only.
 */
export async function makeNode(bytePath: string, kind: NodeKind, mode: number, major = 0, minor = 0): Promise<void> {
  mknodCalls++;
  const syscall = kind === 'sock' ? 'bind' : 'mknod';
  if (kind !== 'chr' && kind !== 'blk' && kind !== 'fifo' && kind !== 'sock') {
    throw errnoError('EINVAL', 22, bytePath, syscall, `bad node kind ${String(kind)}`);
  }
  // A byte string has one char per byte and, like any C path, no NUL.
  if (bytePath.length === 0 || /[^\x01-\xff]/.test(bytePath)) {
    throw errnoError(bytePath.length === 0 ? 'ENOENT' : 'EINVAL', bytePath.length === 0 ? 2 : 22, bytePath, syscall, 'bad path');
  }
  if (!Number.isInteger(mode) || mode < 0) throw errnoError('EINVAL', 22, bytePath, syscall, 'bad mode');
  const isDev = kind === 'chr' || kind === 'blk';
  const maj = isDev ? major : 0;
  const min = isDev ? minor : 0;
  if (!Number.isInteger(maj) || maj < 0 || maj > MAX_MAJOR || !Number.isInteger(min) || min < 0 || min > MAX_MINOR) {
    throw errnoError('EINVAL', 22, bytePath, syscall, `device ${major},${minor} out of range`);
  }
  const args = [
    '-I', // no PYTHON* environment, no user site directory, script dir not on sys.path
    '-S', // no site import: faster start, nothing from site-packages
    '-c',
    HELPER,
    Buffer.from(bytePath, 'latin1').toString('hex'),
    kind,
    (mode & 0o7777).toString(8),
    String(maj),
    String(min),
  ];
  await withSlot(
    () =>
      new Promise<void>((resolve, reject) => {
        execFile(
          pythonPath(),
          args,
          { timeout: TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 64 * 1024, encoding: 'utf8', windowsHide: true },
          (err, stdout, stderr) => {
            if (!err) return resolve();
            const e = err as unknown as { code?: string | number; errno?: number; killed?: boolean; signal?: string | null; message: string };
            if (e.code === 3) {
              const m = /^([A-Z0-9]+) (\d+)\s*$/.exec(stdout);
              if (m) return reject(errnoError(m[1]!, Number(m[2]), bytePath, syscall));
            }
            if (typeof e.code === 'string') {
              // The child could not be started. A missing interpreter must not read as a missing
              // parent directory (ENOENT); EAGAIN/ENOMEM stay as they are (NFS3ERR_JUKEBOX).
              const code = e.code === 'ENOENT' || e.code === 'EACCES' ? 'ENOSYS' : e.code;
              return reject(errnoError(code, code === 'ENOSYS' ? 38 : Math.abs(e.errno ?? 5), bytePath, syscall, `cannot run python3: ${e.message}`));
            }
            const why = e.killed || e.signal ? `helper killed (${e.signal ?? 'timeout'})` : `helper failed: ${stderr.trim().slice(-500)}`;
            reject(errnoError('EIO', 5, bytePath, syscall, why));
          },
        );
      }),
  );
}
