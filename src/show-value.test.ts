import { describe, expect, it } from "vitest";
import { showValue } from "./show-value.ts";

describe("showValue", () => {
  it("shows JSON, cut short", () => {
    expect(showValue({ a: [1, "x"] })).toBe('{"a":[1,"x"]}');
    expect(showValue(undefined)).toBe("undefined");
    expect(showValue("y".repeat(500))).toBe(`"${"y".repeat(119)}…`);
  });

  it("never throws, even for a value nested deeper than JSON.stringify can go", () => {
    const deep = JSON.parse("[".repeat(100_000) + "]".repeat(100_000)) as unknown;
    expect(() => JSON.stringify(deep)).toThrow(RangeError);
    expect(showValue(deep)).toBe("a deeply nested array");
    expect(
      showValue({
        toJSON: () => {
          throw new Error("no");
        },
      }),
    ).toBe("a deeply nested object");
  });
});
