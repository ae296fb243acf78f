// Moved to src/bench/ (duofs bench starts diod as a reference server); tests keep this path.
export * from '../../src/bench/diod.js';
