/** The EBCC evidence library: pure functions, no I/O. See docs/evidence.md. */
export * from './errors.ts';
export * from './keys.ts';
export * from './keystone.ts';
export * from './software-root.ts';
export * from './binding.ts';
export * from './cose.ts';
export * from './eat.ts';
export * from './bundle.ts';
export * from './verify.ts';
export * from './formats.ts';
export * from './sample.ts';
