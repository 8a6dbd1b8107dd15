/**
 * The node list of a pxeboot / Red Hat netboot setup: which snapshot directory belongs to which
 * address. Such files come in several shapes, so the reader is liberal: each line holds a node
 * name and an IP address in either order (`node7 10.0.0.7`, `10.0.0.7 node7`, hosts(5) style
 * with aliases, `node7=10.0.0.7`, comma separated), maybe with a MAC address or other columns,
 * and `#` starts a comment. A line it cannot understand is reported as FILE:LINE, and the
 * import refuses to start rather than silently skipping a node.
 */
import fs from 'node:fs';
import net from 'node:net';
import { UserError } from './user-error.js';

export interface NodeEntry {
  name: string;
  ip: string;
  /** FILE:LINE where the node was listed, for messages. */
  source: string;
}

const MAC = /^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i;
/** A host name as DNS and the HOST tag accept it: labels of letters, digits, '-' and '_'. */
export const HOST_NAME = /^[A-Za-z0-9_]([A-Za-z0-9_-]*)(\.[A-Za-z0-9_-]+)*$/;

export class NodesFileError extends UserError {}

/** Parses the text of a nodes file; throws NodesFileError listing every bad line as FILE:LINE. */
export function parseNodesFile(text: string, fileName: string): Map<string, NodeEntry> {
  const nodes = new Map<string, NodeEntry>();
  const byIp = new Map<string, NodeEntry>();
  const problems: string[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const source = `${fileName}:${i + 1}`;
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') return;
    const tokens = line.split(/[\s,;=]+/).filter((t) => t !== '');
    const ips = tokens.filter((t) => net.isIP(t) !== 0);
    const names = tokens.filter((t) => net.isIP(t) === 0 && !MAC.test(t));
    if (ips.length !== 1) {
      problems.push(`${source}: ${ips.length === 0 ? 'no IP address' : 'more than one IP address'} in '${line}' (expected 'NAME IP' or 'IP NAME')`);
      return;
    }
    if (names.length === 0) {
      problems.push(`${source}: no node name in '${line}' (expected 'NAME IP' or 'IP NAME')`);
      return;
    }
    // hosts(5) lines list aliases after the name: the first name is the node's.
    const name = names[0];
    if (!HOST_NAME.test(name)) {
      problems.push(`${source}: '${name}' is not a valid node name`);
      return;
    }
    const entry: NodeEntry = { name, ip: ips[0], source };
    const sameName = nodes.get(name);
    if (sameName !== undefined) {
      if (sameName.ip !== entry.ip) problems.push(`${source}: node ${name} is already listed with ${sameName.ip} at ${sameName.source}`);
      return;
    }
    const sameIp = byIp.get(entry.ip);
    if (sameIp !== undefined) {
      problems.push(`${source}: address ${entry.ip} is already given to ${sameIp.name} at ${sameIp.source}`);
      return;
    }
    nodes.set(name, entry);
    byIp.set(entry.ip, entry);
  });
  if (problems.length > 0) {
    const more = problems.length > 10 ? `\n(${problems.length - 10} more)` : '';
    throw new NodesFileError(`bad lines in the nodes file, nothing was imported:\n${problems.slice(0, 10).join('\n')}${more}`);
  }
  if (nodes.size === 0) throw new NodesFileError(`${fileName}: no nodes listed (expected lines 'NAME IP' or 'IP NAME')`);
  return nodes;
}

export function loadNodesFile(fileName: string): Map<string, NodeEntry> {
  let text: string;
  try {
    text = fs.readFileSync(fileName, 'utf8');
  } catch (err) {
    throw new NodesFileError(`cannot read nodes file ${fileName}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return parseNodesFile(text, fileName);
}
