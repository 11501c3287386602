import { STATUS_CODES, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { Problem } from '../problem.ts';

/**
 * Options for `http.createServer` that must be set at creation. Node checks the header and request
 * timeouts only every `connectionsCheckingInterval` (30 s by default), which would let a slowloris
 * client hold a connection for half a minute past its deadline.
 */
export function serverCreationOptions(config: Config): { connectionsCheckingInterval: number } {
  return {
    connectionsCheckingInterval: Math.max(100, Math.min(1_000, config.connections.headersTimeoutMs / 4)),
  };
}

/** A request Node's HTTP parser rejected before Hono saw it, as an RFC 9457 document. */
function parserProblem(error: NodeJS.ErrnoException): Problem {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new Problem(
        431,
        'headers-too-large',
        'Request header fields too large',
        'the request headers exceed the gateway limit',
      );
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new Problem(408, 'request-timeout', 'Request timeout', 'the request was not received in time');
    case 'HPE_INVALID_METHOD':
    case 'HPE_INVALID_URL':
    case 'HPE_INVALID_HEADER_TOKEN':
    case 'HPE_INVALID_CONSTANT':
    case 'HPE_INVALID_VERSION':
    case 'HPE_INVALID_CHUNK_SIZE':
    case 'HPE_INVALID_CONTENT_LENGTH':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
    case 'HPE_INVALID_TRANSFER_ENCODING':
    case 'HPE_LF_EXPECTED':
    case 'HPE_CR_EXPECTED':
      return new Problem(
        400,
        'malformed-request',
        'Bad request',
        `the request is not valid HTTP/1.1 (${error.code})`,
      );
    default:
      return new Problem(400, 'malformed-request', 'Bad request', 'the request could not be parsed');
  }
}

/**
 * Bounds what any one client can hold: connections, and the time to send headers and a whole request
 * (slowloris). Requests the HTTP parser refuses (oversized headers, malformed HTTP) get a problem
 * document too, and their connection is closed.
 */
export function limitConnections(server: Server, config: Config, logger: Logger): void {
  server.maxConnections = config.connections.max;
  server.headersTimeout = config.connections.headersTimeoutMs;
  server.requestTimeout = config.connections.requestTimeoutMs;
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    // Nothing can be said to a peer that is gone, or that has been sent part of an answer already.
    if (
      error.code === 'ECONNRESET' ||
      !socket.writable ||
      (socket as { _httpMessage?: unknown })._httpMessage
    ) {
      socket.destroy();
      return;
    }
    const problem = parserProblem(error);
    logger.debug({ code: error.code, status: problem.status }, 'refused a request the HTTP parser rejected');
    const body = JSON.stringify(problem.toJSON());
    socket.end(
      `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? ''}\r\n` +
        'content-type: application/problem+json\r\n' +
        `content-length: ${Buffer.byteLength(body)}\r\n` +
        'connection: close\r\n\r\n' +
        body,
    );
  });
}
