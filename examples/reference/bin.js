#!/usr/bin/env node
// The reference example's command line: runs its TypeScript sources through tsx's loader.
import { register } from 'tsx/esm/api';

register();
await import('./cli.ts');
