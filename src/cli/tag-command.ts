/**
 * `clusternfs tag PATH --ip A | --host H | --client ...`: makes one client's variant of PATH
 * (`PATH$$IP=A$$` beside it), from the master or from given content. Never overwrites a
 * variant unless --force, and then replaces it in one rename so a node reading it meanwhile
 * sees the old or the new file, never a half-written one.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Command } from 'commander';
import { hasTag, parseTag, scratchName, taggedName, type Tag } from '../remap/tags.js';
import { rename, toFsPath } from '../store/fsops.js';
import { copyEntry, emptyCounts, lstatOrNull, removeEntry } from './copy-tree.js';
import { displayName, toByteString } from './display-name.js';
import { HOST_NAME } from './nodes-file.js';
import { servesWords } from './tag-words.js';
import { UserError } from './user-error.js';

const HELP_AFTER = `
Exactly one of --ip, --host, --client, --uid, --gid says whom the variant is for, and exactly
one of --from-master, --content, --from-file, --empty what it holds. The variant is made beside
PATH as PATH$$TAG$$ and served instead of PATH to that client (see clusternfs resolve).

--from-master copies PATH with its mode, owner and times (a directory with everything in it,
a symlink as a symlink). The other sources make a regular file with the master's mode and
owner when there is a master, else 0644.

Examples:
  clusternfs tag /srv/root/etc/hostname --ip 10.0.0.7 --content node7
  clusternfs tag /srv/root/etc/fstab --ip 10.0.1.0/24 --from-master
  clusternfs tag /srv/root/etc/motd --host 'rack1-*' --from-file motd.rack1
  clusternfs tag /srv/root/var/spool --client --from-master`;

interface TagOptions {
  ip?: string;
  host?: string;
  client?: boolean;
  uid?: string;
  gid?: string;
  fromMaster?: boolean;
  content?: string;
  fromFile?: string;
  empty?: boolean;
  force: boolean;
}

/** The tag the flags ask for, validated; an admin's typo is a one-line error. */
export function tagFromOptions(opts: TagOptions): Tag {
  const given = (['ip', 'host', 'client', 'uid', 'gid'] as const).filter((k) => opts[k] !== undefined && opts[k] !== false);
  if (given.length !== 1) throw new UserError('say whom the variant is for with exactly one of --ip, --host, --client, --uid, --gid');
  if (opts.ip !== undefined) return ipTag(opts.ip);
  if (opts.host !== undefined) {
    const star = opts.host.endsWith('*');
    const name = star ? opts.host.slice(0, -1) : opts.host;
    if (!HOST_NAME.test(name) || (!star && name.includes('*'))) throw new UserError(`--host ${opts.host}: not a host name (letters, digits, '-', '.'; a trailing '*' for a prefix)`);
    return parseTag(`HOST=${opts.host}`)!;
  }
  if (opts.client) return { kind: 'client' };
  const [key, value] = opts.uid !== undefined ? ['UID', opts.uid] : ['GID', opts.gid!];
  const tag = /^\d+$/.test(value) ? parseTag(`${key}=${value}`) : null;
  if (tag === null) throw new UserError(`--${key.toLowerCase()} ${value}: not a numeric id (0-4294967295)`);
  return tag;
}

/** `10.0.0.7`, `fd00::7`, or a network `10.0.0.0/24` (written IP=10.0.0.0_24). */
function ipTag(text: string): Tag {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  if (net.isIP(addr) === 0) throw new UserError(`--ip ${text}: not an IPv4 or IPv6 address (or network like 10.0.0.0/24)`);
  const tag = parseTag(slash < 0 ? `IP=${addr}` : `IP=${addr}_${text.slice(slash + 1)}`);
  if (tag === null || tag.kind !== 'ip') throw new UserError(`--ip ${text}: the prefix length must be 0-${net.isIPv4(addr) ? 32 : 128}`);
  if (slash >= 0 && !tag.exact && servesWords(tag) !== `${addr}/${tag.prefix}`) {
    throw new UserError(`--ip ${text}: host bits are set; did you mean ${servesWords(tag)}?`);
  }
  return tag;
}


async function contentFromOptions(opts: TagOptions): Promise<Buffer | 'master'> {
  const sources = (['fromMaster', 'content', 'fromFile', 'empty'] as const).filter((k) => opts[k] !== undefined && opts[k] !== false);
  if (sources.length !== 1) {
    throw new UserError('say what the variant holds with exactly one of --from-master (a copy of PATH), --content TEXT, --from-file FILE, --empty');
  }
  if (opts.fromMaster) return 'master';
  if (opts.empty) return Buffer.alloc(0);
  if (opts.content !== undefined) return Buffer.from(opts.content.endsWith('\n') ? opts.content : `${opts.content}\n`);
  try {
    return await fsp.readFile(opts.fromFile!);
  } catch (err) {
    throw new UserError(`cannot read ${opts.fromFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/**
 * Writes `data` as a new file at `dest` with the master's mode and owner (if any). Owner, mode
 * and times go through the descriptor the file was made with (O_EXCL|O_NOFOLLOW): a chmod() or
 * chown() by path would follow a symlink someone swapped in at `dest` meanwhile (the directory
 * may be a node's /tmp) and give /etc/shadow the master's mode. `onWritten` runs between the
 * write and the metadata (tests swap the path there).
 */
export async function writeNewFile(dest: string, data: Buffer, master: fs.Stats | null, onWritten?: () => void): Promise<void> {
  const mode = master?.isFile() ? master.mode & 0o7777 : 0o644;
  const c = fs.constants;
  // 0600 until the owner and mode are set: no one else reads it before they are.
  const fh = await fsp.open(toFsPath(dest), c.O_WRONLY | c.O_CREAT | c.O_EXCL | c.O_NOFOLLOW, 0o600);
  try {
    await fh.writeFile(data);
    onWritten?.();
    if (master?.isFile() && process.getuid?.() === 0) await fh.chown(master.uid, master.gid);
    // After chown, which clears setuid bits; the umask does not apply to fchmod.
    await fh.chmod(mode);
    const now = Date.now() / 1000;
    await fh.utimes(now, now);
  } finally {
    await fh.close();
  }
}

export async function tagCommand(pathArg: string, opts: TagOptions): Promise<void> {
  const tag = tagFromOptions(opts);
  const source = await contentFromOptions(opts);
  const abs = path.resolve(pathArg);
  const base = path.basename(abs);
  if (pathArg.endsWith('/') || abs === '/') throw new UserError(`${pathArg}: give the path of the file or directory to make a variant of`);
  if (hasTag(toByteString(base))) throw new UserError(`${pathArg} is already a tagged name; give the master's path (without $$...$$)`);
  const dir = toByteString(path.dirname(abs));
  const dirSt = await lstatOrNull(dir);
  if (dirSt === null || !dirSt.isDirectory()) throw new UserError(`directory ${path.dirname(abs)} does not exist`);
  const masterPath = toByteString(abs);
  const master = await lstatOrNull(masterPath);
  if (source === 'master' && master === null) throw new UserError(`${abs} does not exist, so there is no master to copy; give --content, --from-file or --empty`);
  const variant = `${dir}/${taggedName(toByteString(base), tag)}`;
  const existing = await lstatOrNull(variant);
  if (existing !== null && !opts.force) throw new UserError(`${displayName(variant)} exists already; use --force to replace it`);

  // Made under a temporary name in the same directory, then renamed into place: a replaced
  // variant changes in one step. The temporary name selects no client (a UID tag would: AUTH_SYS
  // lets a node send uid 4294967295 and read another node's variant while it is being made).
  const temp = `${dir}/${scratchName(randomBytes(8).toString('hex'))}`;
  try {
    if (source === 'master') await copyEntry(masterPath, temp, master!, emptyCounts());
    else await writeNewFile(temp, source, master);
    if (existing !== null && existing.isDirectory()) await removeEntry(variant);
    await rename(temp, variant);
  } catch (err) {
    await removeEntry(temp).catch(() => {});
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOSPC') throw new UserError(`cannot make ${displayName(variant)}: ${code}`);
    throw err;
  }
  const what = source === 'master' ? 'a copy of the master' : master === null ? 'no master exists: other clients see nothing there' : 'new content';
  process.stdout.write(`${existing !== null ? 'replaced' : 'created'} ${displayName(variant)} for ${servesWords(tag)} (${what})\n`);
}

export function tagCommandDefinition(): Command {
  return new Command('tag')
    .description("make a client's own variant of PATH (PATH$$IP=A$$ and friends), refusing to overwrite one without --force")
    .argument('<PATH>', 'the master file or directory, e.g. /srv/root/etc/hostname (it need not exist unless --from-master)')
    .option('--ip <A>', 'for the client at address A (IPv4 or IPv6), or for network A like 10.0.0.0/24')
    .option('--host <H>', "for the client whose short host name is H, or every host starting with P given as 'P*'")
    .option('--client', 'the default variant for any client (PATH$$CLIENT$$)')
    .option('--uid <U>', 'for calls with AUTH_SYS uid U')
    .option('--gid <G>', 'for calls with AUTH_SYS gid G')
    .option('--from-master', 'copy PATH (content, mode, owner, times; a directory with its tree)')
    .option('--content <TEXT>', 'the variant holds TEXT and a newline')
    .option('--from-file <FILE>', "the variant holds FILE's content")
    .option('--empty', 'the variant is an empty file')
    .option('--force', 'replace an existing variant', false)
    .addHelpText('after', HELP_AFTER)
    .action((p: string, opts: TagOptions) => tagCommand(p, opts));
}
