// One error type for everything a compatibility parser refuses: an option
// another tool's command line accepts but duofs does not, a malformed value,
// a combination that makes no sense. `message` is one line an operator can
// act on, naming the option; callers print it alone and exit 1.

export class CompatError extends Error {
  override name = 'CompatError';
  /** the option (as the user spelled it) the error is about, when there is one */
  readonly option: string | undefined;

  constructor(message: string, option?: string) {
    super(message);
    this.option = option;
  }
}

export function isCompatError(e: unknown): e is CompatError {
  return e instanceof CompatError;
}
