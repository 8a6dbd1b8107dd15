/**
 * A mistake the admin can fix (a missing directory, a bad flag value, a bad line in a nodes
 * file): main.ts prints its message as one line and exits with status 2, never a stack trace.
 */
export class UserError extends Error {}
