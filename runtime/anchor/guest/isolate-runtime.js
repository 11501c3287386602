// Runs inside each anchor isolate of the isolate host (a classic script, evaluated before the tenant's
// module). A V8 isolate has no Node and no web platform: this file is the whole Worker surface the
// anchor gets (Request, Response, Headers, URL, TextEncoder/TextDecoder, atob/btoa, console, timers,
// fetch, crypto subset) plus the serve loop. The host gives it a few primitives as globals; they are
// captured here and removed, so that tenant code reaches the host only through this file's objects.
/* global __ebccSend, __ebccUrl, __ebccCrypto, __ebccTimer */
(() => {
  'use strict';
  const send = __ebccSend;
  const hostUrl = __ebccUrl;
  const hostCrypto = __ebccCrypto;
  const hostTimer = __ebccTimer;
  for (const name of ['__ebccSend', '__ebccUrl', '__ebccCrypto', '__ebccTimer']) delete globalThis[name];

  const emit = (header, body) => send(JSON.stringify(header), body);
  /** The invocation whose work is running now: set by the host for each entry into the isolate. */
  let current = null;
  const pending = new Map();
  let nextCallId = 1;

  function call(header, body) {
    const callId = nextCallId++;
    return new Promise((resolve, reject) => {
      pending.set(callId, { resolve, reject, invocation: current });
      emit({ ...header, callId, invocation: current }, body);
    });
  }

  // ---- bytes and text -------------------------------------------------------------------------------
  function utf8Encode(input) {
    const s = String(input);
    const out = [];
    for (let i = 0; i < s.length; i++) {
      let c = s.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        const d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
        } else c = 0xfffd;
      } else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
    return new Uint8Array(out);
  }

  function utf8Decode(bytes, fatal) {
    let out = '';
    const parts = [];
    for (let i = 0; i < bytes.length;) {
      const b = bytes[i];
      let c = 0xfffd;
      let n = 1;
      if (b < 0x80) c = b;
      else if (b >= 0xc2 && b < 0xe0 && i + 1 < bytes.length && (bytes[i + 1] & 0xc0) === 0x80) {
        c = ((b & 31) << 6) | (bytes[i + 1] & 63);
        n = 2;
      } else if (b >= 0xe0 && b < 0xf0 && i + 2 < bytes.length) {
        const c1 = bytes[i + 1];
        const c2 = bytes[i + 2];
        const v = ((b & 15) << 12) | ((c1 & 63) << 6) | (c2 & 63);
        if ((c1 & 0xc0) === 0x80 && (c2 & 0xc0) === 0x80 && v >= 0x800 && (v < 0xd800 || v > 0xdfff)) {
          c = v;
          n = 3;
        }
      } else if (b >= 0xf0 && b < 0xf5 && i + 3 < bytes.length) {
        const c1 = bytes[i + 1];
        const c2 = bytes[i + 2];
        const c3 = bytes[i + 3];
        const v = ((b & 7) << 18) | ((c1 & 63) << 12) | ((c2 & 63) << 6) | (c3 & 63);
        if (
          (c1 & 0xc0) === 0x80 &&
          (c2 & 0xc0) === 0x80 &&
          (c3 & 0xc0) === 0x80 &&
          v >= 0x10000 &&
          v <= 0x10ffff
        ) {
          c = v;
          n = 4;
        }
      }
      if (c === 0xfffd && n === 1 && b >= 0x80 && fatal)
        throw new TypeError('The encoded data was not valid utf-8');
      if (c >= 0x10000) {
        c -= 0x10000;
        out += String.fromCharCode(0xd800 + (c >> 10), 0xdc00 + (c & 1023));
      } else out += String.fromCharCode(c);
      if (out.length > 8192) {
        parts.push(out);
        out = '';
      }
      i += n;
    }
    parts.push(out);
    return parts.join('');
  }

  class TextEncoder {
    get encoding() {
      return 'utf-8';
    }
    encode(input = '') {
      return utf8Encode(input);
    }
  }

  class TextDecoder {
    #fatal;
    constructor(label = 'utf-8', options = {}) {
      if (!/^(utf-?8|unicode-1-1-utf-8)$/i.test(String(label).trim()))
        throw new RangeError(`The "${label}" encoding is not supported`);
      this.#fatal = Boolean(options.fatal);
    }
    get encoding() {
      return 'utf-8';
    }
    decode(input) {
      if (input === undefined) return '';
      let bytes = toBytes(input);
      if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
      return utf8Decode(bytes, this.#fatal);
    }
  }

  /** A copy is not needed where the bytes are only read; a view of the same memory is enough. */
  function toBytes(input) {
    if (input instanceof Uint8Array) return input;
    if (input instanceof ArrayBuffer) return new Uint8Array(input);
    if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
    throw new TypeError('expected an ArrayBuffer or an ArrayBufferView');
  }

  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  function btoa(input) {
    const s = String(input);
    let out = '';
    for (let i = 0; i < s.length; i += 3) {
      const a = s.charCodeAt(i);
      const b = s.charCodeAt(i + 1);
      const c = s.charCodeAt(i + 2);
      if (a > 255 || b > 255 || c > 255) throw new DOMException('Invalid character', 'InvalidCharacterError');
      const n = (a << 16) | ((b || 0) << 8) | (c || 0);
      out += B64[n >> 18] + B64[(n >> 12) & 63];
      out += i + 1 < s.length ? B64[(n >> 6) & 63] : '=';
      out += i + 2 < s.length ? B64[n & 63] : '=';
    }
    return out;
  }
  function atob(input) {
    const s = String(input).replace(/[\t\n\f\r ]/g, '');
    if (s.length % 4 === 1 || /[^A-Za-z0-9+/=]/.test(s) || /=[^=]/.test(s))
      throw new DOMException('The string to be decoded is not correctly encoded.', 'InvalidCharacterError');
    const clean = s.replace(/=+$/, '');
    let out = '';
    let bits = 0;
    let value = 0;
    for (const ch of clean) {
      value = (value << 6) | B64.indexOf(ch);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out += String.fromCharCode((value >> bits) & 255);
      }
    }
    return out;
  }

  class DOMException extends Error {
    constructor(message = '', name = 'Error') {
      super(message);
      Object.defineProperty(this, 'name', { value: name, configurable: true, writable: true });
    }
  }

  // ---- console ----------------------------------------------------------------------------------------
  function inspect(value, depth = 0) {
    if (typeof value === 'string') return depth ? JSON.stringify(value) : value;
    if (typeof value === 'bigint') return `${value}n`;
    if (typeof value === 'function') return `[Function: ${value.name || 'anonymous'}]`;
    if (typeof value === 'symbol' || value === undefined || value === null || typeof value !== 'object')
      return String(value);
    if (value instanceof Error) return value.stack || `${value.name}: ${value.message}`;
    if (depth > 2) return Array.isArray(value) ? '[Array]' : '[Object]';
    try {
      if (Array.isArray(value)) return `[ ${value.map((v) => inspect(v, depth + 1)).join(', ')} ]`;
      const entries = Object.entries(value).map(([k, v]) => `${k}: ${inspect(v, depth + 1)}`);
      return entries.length ? `{ ${entries.join(', ')} }` : '{}';
    } catch {
      return '[object]';
    }
  }
  function format(args) {
    const [first, ...rest] = args;
    if (typeof first !== 'string') return args.map((a) => inspect(a)).join(' ');
    let i = 0;
    const head = first.replace(/%[sdifjoO%]/g, (m) => {
      if (m === '%%') return '%';
      if (i >= rest.length) return m;
      const v = rest[i++];
      if (m === '%d' || m === '%i') return String(m === '%i' ? Math.trunc(Number(v)) : Number(v));
      if (m === '%f') return String(Number(v));
      if (m === '%j') return JSON.stringify(v);
      return inspect(v, m === '%s' ? 0 : 1);
    });
    return [head, ...rest.slice(i).map((a) => inspect(a))].join(' ');
  }
  const console = {};
  for (const level of ['debug', 'info', 'log', 'warn', 'error']) {
    console[level] = (...args) => emit({ t: 'console', invocation: current, level, text: format(args) });
  }
  console.trace = console.debug;

  // ---- URL ------------------------------------------------------------------------------------------
  // Parsing is the host's (Node's WHATWG URL): exact, and no second parser to disagree with it.
  const URL_PARTS = ['href', 'origin', 'protocol', 'username', 'password', 'host', 'hostname', 'port'];
  const URL_MORE = ['pathname', 'search', 'hash'];
  class URLSearchParams {
    #list = [];
    #onChange;
    constructor(init = '', onChange) {
      this.#onChange = onChange;
      if (init instanceof URLSearchParams) this.#list = [...init];
      else if (typeof init === 'object' && init !== null) {
        const pairs = Symbol.iterator in init ? [...init] : Object.entries(init);
        for (const pair of pairs) {
          const [k, v, extra] = [...pair];
          if (extra !== undefined || pair.length !== 2) throw new TypeError('Each pair must have two items');
          this.#list.push([String(k), String(v)]);
        }
      } else this.#parse(String(init));
    }
    #parse(s) {
      this.#list = [];
      const decode = (x) => {
        const plus = x.replace(/\+/g, ' ');
        try {
          return decodeURIComponent(plus);
        } catch {
          return plus;
        }
      };
      for (const part of (s.startsWith('?') ? s.slice(1) : s).split('&')) {
        if (!part) continue;
        const eq = part.indexOf('=');
        this.#list.push(
          eq < 0 ? [decode(part), ''] : [decode(part.slice(0, eq)), decode(part.slice(eq + 1))],
        );
      }
    }
    /** Called by the URL that owns this object when its query changes. */
    _reset(search) {
      this.#parse(search);
    }
    #changed() {
      this.#onChange?.(this.toString());
    }
    get size() {
      return this.#list.length;
    }
    append(k, v) {
      this.#list.push([String(k), String(v)]);
      this.#changed();
    }
    delete(k, v) {
      this.#list = this.#list.filter(([a, b]) => !(a === String(k) && (v === undefined || b === String(v))));
      this.#changed();
    }
    get(k) {
      return this.#list.find(([a]) => a === String(k))?.[1] ?? null;
    }
    getAll(k) {
      return this.#list.filter(([a]) => a === String(k)).map(([, b]) => b);
    }
    has(k, v) {
      return this.#list.some(([a, b]) => a === String(k) && (v === undefined || b === String(v)));
    }
    set(k, v) {
      const key = String(k);
      const at = this.#list.findIndex(([a]) => a === key);
      if (at < 0) this.#list.push([key, String(v)]);
      else
        this.#list = this.#list
          .filter(([a], i) => a !== key || i === at)
          .map((p, i) => (i === at ? [key, String(v)] : p));
      this.#changed();
    }
    sort() {
      this.#list.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      this.#changed();
    }
    forEach(fn, self) {
      for (const [k, v] of this.#list) fn.call(self, v, k, this);
    }
    *entries() {
      yield* this.#list.map((p) => [...p]);
    }
    *keys() {
      for (const [k] of this.#list) yield k;
    }
    *values() {
      for (const [, v] of this.#list) yield v;
    }
    [Symbol.iterator]() {
      return this.entries();
    }
    toString() {
      const enc = (x) =>
        encodeURIComponent(x)
          .replace(/%20/g, '+')
          .replace(/[!'()~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
      return this.#list.map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');
    }
  }

  class URL {
    #parts;
    #params;
    constructor(input, base) {
      const parts = hostUrl('parse', String(input), base === undefined ? undefined : String(base));
      if (typeof parts !== 'string') throw new TypeError(`Invalid URL: ${String(input)}`);
      this.#parts = JSON.parse(parts);
      this.#params = new URLSearchParams(this.#parts.search, (query) => {
        this.#update('search', query);
      });
    }
    static canParse(input, base) {
      return (
        typeof hostUrl('parse', String(input), base === undefined ? undefined : String(base)) === 'string'
      );
    }
    #update(part, value) {
      const parts = hostUrl('set', this.#parts.href, part, String(value));
      if (typeof parts === 'string') this.#parts = JSON.parse(parts);
      if (part !== 'search') this.#params._reset(this.#parts.search);
    }
    get searchParams() {
      return this.#params;
    }
    toString() {
      return this.#parts.href;
    }
    toJSON() {
      return this.#parts.href;
    }
    static {
      // Private fields are reachable only from inside the class body, so the accessors are made here.
      for (const part of [...URL_PARTS, ...URL_MORE]) {
        Object.defineProperty(URL.prototype, part, {
          get() {
            return this.#parts[part];
          },
          set:
            part === 'origin'
              ? undefined
              : function (value) {
                  this.#update(part, value);
                },
          enumerable: true,
          configurable: true,
        });
      }
    }
  }
  // ---- Headers ------------------------------------------------------------------------------------------
  const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
  class Headers {
    #map = new Map();
    #cookies = [];
    constructor(init) {
      if (init instanceof Headers) init.forEach((v, k) => this.append(k, v));
      else if (init !== undefined && init !== null) {
        if (typeof init !== 'object') throw new TypeError('Headers init must be an object or iterable');
        const pairs = Symbol.iterator in init ? [...init] : Object.entries(init);
        for (const pair of pairs) {
          const items = [...pair];
          if (items.length !== 2) throw new TypeError('Header pairs must have exactly two items');
          this.append(items[0], items[1]);
        }
      }
    }
    static #check(name, value) {
      const n = String(name);
      if (!TOKEN.test(n)) throw new TypeError(`Invalid header name: "${n}"`);
      const v = String(value).replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, '');
      if (/[\r\n\0]/.test(v)) throw new TypeError(`Invalid header value for "${n}"`);
      return [n.toLowerCase(), v];
    }
    append(name, value) {
      const [n, v] = Headers.#check(name, value);
      if (n === 'set-cookie') this.#cookies.push(v);
      const had = this.#map.get(n);
      this.#map.set(n, had === undefined ? v : `${had}, ${v}`);
    }
    set(name, value) {
      const [n, v] = Headers.#check(name, value);
      if (n === 'set-cookie') this.#cookies = [v];
      this.#map.set(n, v);
    }
    get(name) {
      return this.#map.get(String(name).toLowerCase()) ?? null;
    }
    getSetCookie() {
      return [...this.#cookies];
    }
    has(name) {
      return this.#map.has(String(name).toLowerCase());
    }
    delete(name) {
      const n = String(name).toLowerCase();
      if (n === 'set-cookie') this.#cookies = [];
      this.#map.delete(n);
    }
    forEach(fn, self) {
      for (const [k, v] of this.entries()) fn.call(self, v, k, this);
    }
    *entries() {
      const names = [...this.#map.keys()].sort();
      for (const n of names) {
        if (n === 'set-cookie') for (const c of this.#cookies) yield [n, c];
        else yield [n, this.#map.get(n)];
      }
    }
    *keys() {
      for (const [k] of this.entries()) yield k;
    }
    *values() {
      for (const [, v] of this.entries()) yield v;
    }
    [Symbol.iterator]() {
      return this.entries();
    }
  }

  // ---- Body, Request, Response ----------------------------------------------------------------------------
  /** The bytes and the default content type of a body init (no streams: there are none in here). */
  function extractBody(init) {
    if (init === undefined || init === null) return [null, null];
    if (typeof init === 'string') return [utf8Encode(init), 'text/plain;charset=UTF-8'];
    if (init instanceof URLSearchParams)
      return [utf8Encode(init.toString()), 'application/x-www-form-urlencoded;charset=UTF-8'];
    if (init instanceof ArrayBuffer || ArrayBuffer.isView(init)) return [toBytes(init).slice(), null];
    if (init instanceof Body) return [init._bytes(), init.headers.get('content-type')];
    return [utf8Encode(String(init)), 'text/plain;charset=UTF-8'];
  }

  class Body {
    #bytes;
    #used = false;
    _initBody(bytes) {
      this.#bytes = bytes;
    }
    _bytes() {
      return this.#bytes;
    }
    get bodyUsed() {
      return this.#used;
    }
    /** No ReadableStream in an isolate: a body is null or a marker that one exists (use the readers). */
    get body() {
      return this.#bytes === null ? null : { locked: this.#used };
    }
    #consume() {
      if (this.#used) return Promise.reject(new TypeError('Body has already been used'));
      this.#used = true;
      return Promise.resolve(this.#bytes ?? new Uint8Array(0));
    }
    async arrayBuffer() {
      const b = await this.#consume();
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    }
    async bytes() {
      return (await this.#consume()).slice();
    }
    async text() {
      return utf8Decode(await this.#consume(), false);
    }
    async json() {
      return JSON.parse(await this.text());
    }
    async formData() {
      throw new TypeError('formData() is not available in the isolate executor');
    }
    async blob() {
      throw new TypeError('blob() is not available in the isolate executor');
    }
  }

  const METHODS = ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'PATCH'];
  class Request extends Body {
    #url;
    #method;
    #headers;
    #redirect;
    constructor(input, init = {}) {
      super();
      const from = input instanceof Request ? input : null;
      this.#url = from ? from.url : new URL(String(input)).href;
      const method = init.method === undefined ? (from?.method ?? 'GET') : String(init.method);
      if (!TOKEN.test(method)) throw new TypeError(`Invalid method: ${method}`);
      this.#method = METHODS.includes(method.toUpperCase()) ? method.toUpperCase() : method;
      this.#headers = new Headers(init.headers !== undefined ? init.headers : from?.headers);
      this.#redirect = init.redirect ?? from?.redirect ?? 'follow';
      let bytes = null;
      if (init.body !== undefined && init.body !== null) {
        if (this.#method === 'GET' || this.#method === 'HEAD')
          throw new TypeError('Request with GET/HEAD method cannot have body.');
        const [b, type] = extractBody(init.body);
        bytes = b;
        if (type && !this.#headers.has('content-type')) this.#headers.set('content-type', type);
      } else if (from && init.body === undefined) bytes = from._bytes();
      this._initBody(bytes);
    }
    get url() {
      return this.#url;
    }
    get method() {
      return this.#method;
    }
    get headers() {
      return this.#headers;
    }
    get redirect() {
      return this.#redirect;
    }
    get signal() {
      return { aborted: false };
    }
    clone() {
      if (this.bodyUsed) throw new TypeError('Request body has already been used');
      return new Request(this);
    }
  }

  class Response extends Body {
    #status;
    #statusText;
    #headers;
    #type;
    constructor(body = null, init = {}) {
      super();
      const status = init.status === undefined ? 200 : Number(init.status);
      if (!Number.isInteger(status) || status < 200 || status > 599)
        throw new RangeError(`init["status"] must be in the range of 200 to 599, inclusive.`);
      this.#status = status;
      this.#statusText = init.statusText === undefined ? '' : String(init.statusText);
      if (!/^[\t\x20-\x7e\x80-\xff]*$/.test(this.#statusText)) throw new TypeError('Invalid statusText');
      this.#headers = new Headers(init.headers);
      this.#type = 'default';
      const [bytes, type] = extractBody(body);
      if (bytes !== null && [204, 205, 304].includes(status))
        throw new TypeError('Response with null body status cannot have body');
      if (type && !this.#headers.has('content-type')) this.#headers.set('content-type', type);
      this._initBody(bytes);
    }
    static json(data, init = {}) {
      const text = JSON.stringify(data);
      if (text === undefined) throw new TypeError('Value is not JSON serializable');
      const headers = new Headers(init.headers);
      if (!headers.has('content-type')) headers.set('content-type', 'application/json');
      return new Response(text, { ...init, headers });
    }
    static redirect(url, status = 302) {
      if (![301, 302, 303, 307, 308].includes(status)) throw new RangeError('Invalid status code');
      return new Response(null, { status, headers: { location: new URL(String(url)).href } });
    }
    static error() {
      throw new TypeError('Response.error() is not available in the isolate executor');
    }
    get status() {
      return this.#status;
    }
    get statusText() {
      return this.#statusText;
    }
    get ok() {
      return this.#status >= 200 && this.#status < 300;
    }
    get headers() {
      return this.#headers;
    }
    get type() {
      return this.#type;
    }
    get redirected() {
      return false;
    }
    get url() {
      return '';
    }
    clone() {
      if (this.bodyUsed) throw new TypeError('Response body has already been used');
      const copy = this._bytes();
      return new Response(copy === null ? null : copy.slice(), {
        status: this.#status,
        statusText: this.#statusText,
        headers: this.#headers,
      });
    }
  }

  // ---- timers -----------------------------------------------------------------------------------------
  // The host keeps the clock (an isolate has none that can wake it): a timer is a host timeout that
  // calls back into the isolate.
  const timers = new Map();
  let nextTimer = 1;
  function setTimer(fn, ms, args, repeat) {
    if (typeof fn !== 'function') throw new TypeError('the callback must be a function');
    const id = nextTimer++;
    const delay = Math.max(0, Math.min(Number(ms) || 0, 2 ** 31 - 1));
    hostTimer('set', id, repeat ? Math.max(delay, 1) : delay);
    timers.set(id, { fn, args, repeat: repeat ? Math.max(delay, 1) : 0, invocation: current });
    return id;
  }
  function clearTimer(id) {
    if (timers.delete(id)) hostTimer('clear', id, 0);
  }
  function fireTimer(id) {
    const timer = timers.get(id);
    if (!timer) return;
    if (timer.repeat) hostTimer('set', id, timer.repeat);
    else timers.delete(id);
    current = timer.invocation;
    try {
      timer.fn(...timer.args);
    } catch (error) {
      // The host ends the anchor on this marker (an uncaught exception ends a process anchor too).
      const what = error instanceof Error ? `${error.name}: ${error.message}` : format([error]);
      throw new Error(`ebcc-uncaught: ${what}`, { cause: error });
    }
  }

  // ---- crypto (subset) ------------------------------------------------------------------------------
  const HASHES = { 'SHA-1': 'sha1', 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' };
  const hashName = (algorithm) => {
    const name = typeof algorithm === 'string' ? algorithm : algorithm?.name;
    const hash = HASHES[String(name).toUpperCase()];
    if (!hash) throw new DOMException(`Unrecognized algorithm name: ${name}`, 'NotSupportedError');
    return hash;
  };
  class CryptoKey {
    #raw;
    constructor(raw, hash, usages, extractable) {
      this.#raw = raw;
      this.type = 'secret';
      this.extractable = extractable;
      this.algorithm = { name: 'HMAC', hash: { name: hash }, length: raw.length * 8 };
      this.usages = [...usages];
      Object.freeze(this);
    }
    static _raw(key) {
      return key.#raw;
    }
  }
  const subtle = Object.freeze({
    async digest(algorithm, data) {
      return hostCrypto('digest', hashName(algorithm), toBytes(data).slice()).buffer;
    },
    async importKey(format, keyData, algorithm, extractable, usages) {
      if (format !== 'raw' || String(algorithm?.name).toUpperCase() !== 'HMAC')
        throw new DOMException(
          'only raw HMAC keys are available in the isolate executor',
          'NotSupportedError',
        );
      const hash = typeof algorithm.hash === 'string' ? algorithm.hash : algorithm.hash?.name;
      hashName(hash);
      return new CryptoKey(
        toBytes(keyData).slice(),
        String(hash).toUpperCase(),
        usages,
        Boolean(extractable),
      );
    },
    async exportKey(format, key) {
      if (format !== 'raw' || !key.extractable)
        throw new DOMException('key not extractable', 'InvalidAccessError');
      return CryptoKey._raw(key).slice().buffer;
    },
    async sign(algorithm, key, data) {
      if (!key.usages.includes('sign')) throw new DOMException('key usage', 'InvalidAccessError');
      const hash = hashName(key.algorithm.hash.name);
      return hostCrypto('hmac', hash, toBytes(data).slice(), CryptoKey._raw(key)).buffer;
    },
    async verify(algorithm, key, signature, data) {
      if (!key.usages.includes('verify')) throw new DOMException('key usage', 'InvalidAccessError');
      const hash = hashName(key.algorithm.hash.name);
      const expected = hostCrypto('hmac', hash, toBytes(data).slice(), CryptoKey._raw(key));
      const got = toBytes(signature);
      let diff = expected.length ^ got.length;
      for (let i = 0; i < expected.length; i++) diff |= expected[i] ^ (got[i] ?? 0);
      return diff === 0;
    },
  });
  const crypto = Object.freeze({
    subtle,
    getRandomValues(array) {
      if (!ArrayBuffer.isView(array) || array instanceof Float32Array || array instanceof Float64Array)
        throw new DOMException('not an integer array', 'TypeMismatchError');
      if (array.byteLength > 65536) throw new DOMException('too many bytes requested', 'QuotaExceededError');
      toBytes(array).set(hostCrypto('random', '', array.byteLength));
      return array;
    },
    randomUUID() {
      const b = crypto.getRandomValues(new Uint8Array(16));
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    },
  });

  // ---- stages, fetch ------------------------------------------------------------------------------------
  function stageBytes(input) {
    if (input instanceof ArrayBuffer || ArrayBuffer.isView(input)) return toBytes(input);
    if (typeof input === 'string') return utf8Encode(input);
    if (input === undefined) throw new TypeError('invoke() needs an input: bytes, a string, or a JSON value');
    return utf8Encode(JSON.stringify(input));
  }
  class StageResponse {
    #body;
    constructor(meta, body) {
      this.#body = body;
      this.stage = meta.stage;
      this.eid = meta.eid;
      this.seq = meta.seq;
      this.executionId = meta.executionId;
    }
    bytes() {
      return Promise.resolve(this.#body.slice());
    }
    arrayBuffer() {
      return Promise.resolve(this.#body.slice().buffer);
    }
    text() {
      return Promise.resolve(utf8Decode(this.#body, false));
    }
    json() {
      return Promise.resolve(JSON.parse(utf8Decode(this.#body, false)));
    }
  }
  class StageError extends Error {
    constructor(meta) {
      super(meta.message);
      this.name = 'StageError';
      this.code = meta.code;
      this.status = meta.status;
      this.eid = meta.eid ?? null;
    }
  }

  async function fetch(input, init) {
    const request = new Request(input, init);
    const body = request.body ? new Uint8Array(await request.arrayBuffer()) : undefined;
    const { header, body: responseBody } = await call(
      { t: 'net', method: request.method, url: request.url, headers: [...request.headers] },
      body,
    );
    if (!header.ok) throw new TypeError(`fetch to ${request.url} refused: ${header.message}`);
    return new Response(header.status === 204 || header.status === 304 ? null : responseBody, {
      status: header.status,
      headers: header.headers,
    });
  }

  // ---- the globals the anchor sees --------------------------------------------------------------------------
  const globals = {
    console,
    TextEncoder,
    TextDecoder,
    URL,
    URLSearchParams,
    Headers,
    Request,
    Response,
    DOMException,
    crypto,
    CryptoKey,
    fetch,
    atob,
    btoa,
    setTimeout: (fn, ms, ...args) => setTimer(fn, ms, args, false),
    clearTimeout: clearTimer,
    setInterval: (fn, ms, ...args) => setTimer(fn, ms, args, true),
    clearInterval: clearTimer,
    queueMicrotask: (fn) => void Promise.resolve().then(fn),
    structuredClone: (value) => JSON.parse(JSON.stringify(value)),
    self: globalThis,
  };
  for (const [name, value] of Object.entries(globals))
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });

  // ---- serving ------------------------------------------------------------------------------------------
  let handler = null;
  let env = null;

  async function serve(id, header, body) {
    const waits = [];
    const ctx = Object.freeze({
      waitUntil: (promise) => void waits.push(Promise.resolve(promise)),
      passThroughOnException: () => {},
    });
    try {
      const request = new Request(header.url, {
        method: header.method,
        headers: header.headers,
        body: header.method === 'GET' || header.method === 'HEAD' ? undefined : body,
      });
      const response = await handler.fetch(request, env, ctx);
      if (!(response instanceof Response)) {
        const got =
          response === null
            ? 'null'
            : typeof response === 'object'
              ? (response.constructor?.name ?? 'an object')
              : typeof response;
        throw new TypeError(`the anchor's fetch() returned ${got}, not a Response`);
      }
      const bytes = new Uint8Array(await response.arrayBuffer());
      emit(
        {
          t: 'response',
          id,
          status: response.status,
          statusText: response.statusText,
          headers: [...response.headers],
        },
        bytes,
      );
    } catch (error) {
      emit({
        t: 'error',
        id,
        message: error instanceof Error ? `${error.name}: ${error.message}` : `thrown: ${format([error])}`,
      });
    }
    const settled = await Promise.allSettled(waits);
    const failed = settled
      .filter((s) => s.status === 'rejected')
      .map((s) => String(s.reason?.message ?? s.reason));
    emit({ t: 'done', id, waitUntilErrors: failed });
  }

  // The host's only ways in: set up once the module is loaded, then one entry per event.
  globalThis.__ebccInit = (mod, vars, stageNames) => {
    delete globalThis.__ebccInit;
    if (!mod || typeof mod.fetch !== 'function')
      throw new TypeError('the anchor module must `export default { fetch(request, env, ctx) }`');
    handler = mod;
    const stages = Object.freeze(
      Object.fromEntries(
        JSON.parse(stageNames).map((stage) => [
          stage,
          Object.freeze({
            async invoke(input, options = {}) {
              const nonce = options.nonce === undefined ? undefined : String(options.nonce);
              const { header, body } = await call({ t: 'stage', stage, nonce }, stageBytes(input));
              if (!header.ok) throw new StageError(header);
              return new StageResponse(header, body);
            },
          }),
        ]),
      ),
    );
    env = Object.freeze({ ...JSON.parse(vars), stages });
  };
  const deliver = (kind, headerJson, body) => {
    const header = JSON.parse(headerJson);
    if (kind === 'fetch') {
      current = header.id;
      void serve(header.id, header, body);
    } else if (kind === 'reply') {
      const waiter = pending.get(header.callId);
      pending.delete(header.callId);
      if (waiter) current = waiter.invocation;
      waiter?.resolve({ header, body });
    } else if (kind === 'timer') fireTimer(header.id);
  };
  Object.defineProperty(globalThis, '__ebccDeliver', { value: deliver, configurable: true });
})();
