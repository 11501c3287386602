/** Every malformed input the evidence library rejects is reported as one of these typed errors. */
export class EvidenceFormatError extends Error {
  constructor(
    /** A stable, machine-readable reason, e.g. `tag`, `alg`, `crit`, `claims`, `non-canonical`. */
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'EvidenceFormatError';
  }
}

/** A Keystone report that is not exactly the 1352-byte layout (wrong length, data_len, padding). */
export class KeystoneReportError extends EvidenceFormatError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = 'KeystoneReportError';
  }
}

/** A caller passed a value the library cannot sign or bind (wrong key length, bad sequence number...). */
export class EvidenceInputError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = 'EvidenceInputError';
  }
}
