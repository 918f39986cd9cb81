import { inspect } from 'node:util';

/**
 * A resolved password. The value is only reachable through `reveal()`, so a Secret that ends up in
 * a log line, an error message or a JSON dump prints as "[secret]" instead of the password.
 */
export class Secret {
  readonly #value: string;
  /** Where the value came from, safe to show: "env ALICE_PASSWORD", "file /run/secrets/x", "inline". */
  readonly source: string;

  constructor(value: string, source: string) {
    this.#value = value;
    this.source = source;
  }

  reveal(): string {
    return this.#value;
  }

  equals(other: Secret | undefined): boolean {
    return other !== undefined && other.#value === this.#value;
  }

  toString(): string {
    return '[secret]';
  }

  toJSON(): string {
    return '[secret]';
  }

  [inspect.custom](): string {
    return `[secret from ${this.source}]`;
  }
}
