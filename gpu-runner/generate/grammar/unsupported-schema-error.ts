/**
 * A JSON schema, or a part of one, that constrained decoding cannot honour exactly. Raised when a
 * grammar is compiled, before any token is generated, so the API can answer 400 and name the
 * location and keyword; nothing is silently ignored.
 */
export class UnsupportedSchemaError extends Error {
  override readonly name = "UnsupportedSchemaError";
  /** JSON Pointer of the schema object at fault: "#" for the root, "#/properties/tags/items", ... */
  readonly path: string;
  /** The keyword at fault ("patternProperties", "$ref", ...), or "" when the object itself is. */
  readonly keyword: string;
  /** What is wrong, in words, without the location. */
  readonly reason: string;
  /** Which schema of a request, when it holds several: `parameters of tool "get_weather"`. */
  readonly subject: string | null;

  constructor(path: string, keyword: string, reason: string, subject: string | null = null) {
    const location = keyword === "" ? path : `${path}/${keyword}`;
    super(`${subject === null ? "" : `${subject}, `}${location}: ${reason}`);
    this.path = path;
    this.keyword = keyword;
    this.reason = reason;
    this.subject = subject;
  }
}
