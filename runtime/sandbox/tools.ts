import fs from 'node:fs';

/** Host binaries the sandbox launcher needs (all from Debian: bubblewrap, util-linux, bash, tini). */
export interface HostTools {
  bwrap: string | null;
  setpriv: string | null;
  bash: string | null;
  /** statically linked init run as pid 1 inside the sandbox (reaps, forwards signals) */
  init: string | null;
}

function firstExecutable(candidates: readonly string[]): string | null {
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return c;
    } catch {
      /* try next */
    }
  }
  return null;
}

let cached: HostTools | undefined;

export function hostTools(): HostTools {
  if (cached) return cached;
  const initEnv = process.env.EBCC_SANDBOX_INIT;
  cached = {
    bwrap: firstExecutable(
      process.env.EBCC_BWRAP ? [process.env.EBCC_BWRAP] : ['/usr/bin/bwrap', '/bin/bwrap'],
    ),
    setpriv: firstExecutable(['/usr/bin/setpriv', '/bin/setpriv']),
    bash: firstExecutable(['/usr/bin/bash', '/bin/bash']),
    // Only a static init: the sandbox may not contain a libc. EBCC_SANDBOX_INIT=none disables it.
    init:
      initEnv === 'none'
        ? null
        : firstExecutable(initEnv ? [initEnv] : ['/usr/bin/tini-static', '/sbin/tini-static']),
  };
  return cached;
}
