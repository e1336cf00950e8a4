/**
 * Patterns for the string `format`s the grammar can honour: OpenAI's structured-output set
 * (date-time, time, date, duration, email, hostname, ipv4, ipv6, uuid) and uri.
 *
 * Each pattern admits a subset of what validators accept, chosen so that everything it admits is
 * valid: dates never name a 29 February or a day past a month's end, times have no leap second,
 * hostnames stay within 253 characters (labels of at most 16), IPv6 addresses are written in full. xgrammar's own format
 * patterns admit 2021-02-31 and similar, which validators reject.
 */

const DAY_IN_MONTH = "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\\d|30)|02-(?:0[1-9]|1\\d|2[0-8]))";
const DATE = `\\d{4}-${DAY_IN_MONTH}`;
const TIME = "(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d{1,6})?(?:Z|[+-](?:[01]\\d|2[0-3]):[0-5]\\d)";
const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,14}[A-Za-z0-9])?";
const HOSTNAME = `${LABEL}(?:\\.${LABEL}){0,2}`;
const OCTET = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const HEX_GROUP = "[0-9A-Fa-f]{1,4}";
const URI_CHARACTER = "[A-Za-z0-9._~!$&'()*+,;=:@-]";

/** Patterns by format name; a format absent here is refused when validators check it. */
export const FORMAT_PATTERNS: Readonly<Record<string, string>> = {
  date: DATE,
  time: TIME,
  "date-time": `${DATE}T${TIME}`,
  duration:
    "P(?:\\d+W|(?:\\d+Y(?:\\d+M(?:\\d+D)?)?|\\d+M(?:\\d+D)?|\\d+D)(?:T(?:\\d+H(?:\\d+M(?:\\d+S)?)?|\\d+M(?:\\d+S)?|\\d+S))?|T(?:\\d+H(?:\\d+M(?:\\d+S)?)?|\\d+M(?:\\d+S)?|\\d+S))",
  email: `[A-Za-z0-9_%+-]{1,16}(?:\\.[A-Za-z0-9_%+-]{1,16})?@${HOSTNAME}`,
  hostname: HOSTNAME,
  ipv4: `(?:${OCTET}\\.){3}${OCTET}`,
  ipv6: `(?:${HEX_GROUP}:){7}${HEX_GROUP}`,
  uuid: "[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}",
  uri: `https?://${HOSTNAME}(?:/${URI_CHARACTER}*)*(?:\\?(?:${URI_CHARACTER}|[/?])*)?`,
};

/**
 * Formats that JSON Schema defines and validators check but that have no pattern here; a schema
 * using one is refused. Other format names are annotations that no validator checks, and pass.
 */
export const UNSUPPORTED_FORMATS: ReadonlySet<string> = new Set([
  "idn-email",
  "idn-hostname",
  "iri",
  "iri-reference",
  "uri-reference",
  "uri-template",
  "url",
  "json-pointer",
  "json-pointer-uri-fragment",
  "relative-json-pointer",
  "regex",
]);
