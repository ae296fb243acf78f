// Builds dist/ once before the suites: tests that spawn the real CLI
// (bin/duofs.js) run the compiled code.
import { ensureBuild } from '../../scripts/ensure-deps.mjs';

export default function globalSetup() {
  ensureBuild();
}
