/**
 * Tags and resolution rules in words an admin reads in a table: "10.0.0.0/24", "hosts rack1-*",
 * "any client". The grammar itself is src/remap/tags.ts; this only describes its typed values.
 */
import type { Rule } from '../remap/resolve.js';
import { formatAddress, type Tag, type VariantBy } from '../remap/tags.js';

function per(by: VariantBy): string {
  return by === 'ip' ? 'per client (IP)' : 'once for all clients (CLIENT)';
}

/** Which clients an entry with this tag serves. */
export function servesWords(tag: Tag): string {
  switch (tag.kind) {
    case 'ip': {
      const full = tag.addr.v4 !== null ? 32 : 128;
      return tag.prefix === full ? formatAddress(tag.addr) : `${formatAddress(tag.addr)}/${tag.prefix}`;
    }
    case 'host':
      return `host ${tag.name}`;
    case 'hostPrefix':
      return `hosts ${tag.prefix}*`;
    case 'uid':
      return `uid ${tag.id}`;
    case 'gid':
      return `gid ${tag.id}`;
    case 'client':
      return 'any client';
    case 'master':
      return 'everyone (the master, named explicitly)';
    case 'create':
      return `created ${per(tag.by)}`;
    case 'always':
      return `always its own, ${per(tag.by)}`;
    case 'cow':
      return `copy-on-write ${per(tag.by)}`;
  }
}

/** The resolution step of cluster-tags.md for each rule, with what it means. */
export const RULE_WORDS: Readonly<Record<Rule, string>> = {
  'master-explicit': 'rule 1 (name$$$$): the master, asked for explicitly',
  ip: "rule 2 (IP): the variant for this client's address",
  host: "rule 3 (HOST): the variant for this client's host name",
  subnet: "rule 4 (IP=net_n): the variant for the longest subnet containing this client's address",
  'host-prefix': "rule 5 (HOST=prefix*): the variant for the longest host-name prefix matching this client",
  uid: "rule 6 (UID): the variant for the caller's uid",
  gid: "rule 6 (GID): the variant for the caller's gid",
  client: 'rule 7 (CLIENT): the default variant for any client',
  always: "rule 8 (ALWAYS): this client's own variant, made on first create",
  cow: 'rule 9 (COW): the master for reading; the first change copies it to this client\'s variant',
  master: 'rule 10: the master (no variant for this client)',
  create: 'nothing there yet (a CREATE marker applies)',
  none: 'nothing there (NFS3ERR_NOENT)',
};
