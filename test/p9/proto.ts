// Moved to src/doubles/ (the product ships it for duofs bench); tests keep this path.
export * from '../../src/doubles/p9-proto.js';
