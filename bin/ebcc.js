#!/usr/bin/env node
// The CLI is TypeScript run through tsx's loader, so `ebcc` works from a checkout without a build step.
import { register } from 'tsx/esm/api';

register();
await import('../runtime/cli/entry.ts');
