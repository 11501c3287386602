/** Whether the manifest's network allowlist lets the anchor reach `url`. */
export function networkAllowed(url: URL, allow: readonly string[]): boolean {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
  const host = url.hostname.toLowerCase();
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  return allow.some((entry) => {
    const [pattern, onlyPort] = entry.toLowerCase().split(':') as [string, string | undefined];
    if (onlyPort && onlyPort !== port) return false;
    return pattern.startsWith('*.')
      ? host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1
      : host === pattern;
  });
}
