/**
 * A value from untrusted input, for an error message: its JSON, cut short; never an exception,
 * whatever the value (JSON.stringify recurses, so a forged, deeply nested value would overflow
 * the stack and turn a readable refusal into a crash).
 */
export function showValue(value: unknown, maxLength = 120): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Array.isArray(value) ? "a deeply nested array" : `a deeply nested ${typeof value}`;
  }
  return text.length > maxLength ? `${text.slice(0, maxLength)}…` : text;
}
