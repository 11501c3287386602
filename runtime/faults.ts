/**
 * Named crash points for crash-consistency tests. When EBCC_CRASH_AT names a point, the process kills
 * itself with SIGKILL there: no cleanup, no flush, exactly like a power cut at that line.
 */
export function crashPoint(name: string): void {
  const wanted = process.env.EBCC_CRASH_AT;
  if (wanted && wanted.split(',').includes(name)) process.kill(process.pid, 'SIGKILL');
}
