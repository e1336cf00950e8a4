/**
 * The shipped base model's pre-training corpus, generated deterministically from a seed: short
 * English prose from a small grammar, facts about numbers and words, simple records, and ChatML
 * conversations in which an assistant answers small, checkable requests. Everything here is
 * written by this project (no third-party text), so the corpus is license-clean and the same
 * seed reproduces it byte for byte.
 */
import { Rng } from "../random.ts";

/** First names of the corpus's people, shared by generated fine-tuning tasks that should read as familiar text. */
export const NAMES = [
  "Ada",
  "Ben",
  "Cleo",
  "Dan",
  "Eva",
  "Finn",
  "Gia",
  "Hugo",
  "Ivy",
  "Jon",
  "Kai",
  "Lena",
  "Milo",
  "Nora",
  "Omar",
  "Pia",
  "Quinn",
  "Rosa",
  "Sam",
  "Tara",
];
export const ANIMALS = ["cat", "dog", "fox", "owl", "bear", "wolf", "hare", "crow", "frog", "goat", "mouse", "horse", "duck", "seal", "deer"];
const THINGS = ["book", "lamp", "cup", "key", "ball", "coat", "map", "box", "rope", "bell", "kite", "drum", "boat", "ring", "hat"];
const PLACES = ["the park", "the river", "the market", "the hill", "the garden", "the station", "the library", "the forest", "the harbor", "the kitchen"];
const ADJECTIVES = ["red", "small", "quiet", "bright", "old", "happy", "tall", "cold", "warm", "green", "heavy", "quick", "soft", "blue", "brave"];
const VERBS_PAST = ["found", "carried", "painted", "lost", "bought", "opened", "dropped", "cleaned", "hid", "shared"];
const MOTIONS = ["walked to", "ran to", "looked at", "sat near", "waited by", "jumped over", "sang in", "slept in"];
const TIMES = ["In the morning", "At noon", "In the evening", "Later", "Then", "After lunch", "Before dinner", "At night"];
const FEELINGS = ["glad", "tired", "curious", "calm", "surprised", "proud", "sleepy", "hungry"];

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A short story of a few sentences about a person, an animal and a thing. */
function story(rng: Rng): string {
  const name = rng.pick(NAMES);
  const animal = rng.pick(ANIMALS);
  const thing = rng.pick(THINGS);
  const sentences = [
    `${name} had a ${rng.pick(ADJECTIVES)} ${animal}.`,
    `${rng.pick(TIMES)}, ${name} ${rng.pick(MOTIONS)} ${rng.pick(PLACES)}.`,
    `The ${animal} ${rng.pick(VERBS_PAST)} a ${rng.pick(ADJECTIVES)} ${thing}.`,
    `${name} was ${rng.pick(FEELINGS)}.`,
  ];
  if (rng.uniform() < 0.5) sentences.push(`${rng.pick(TIMES)}, they ${rng.pick(MOTIONS)} ${rng.pick(PLACES)} together.`);
  if (rng.uniform() < 0.4) sentences.push(`"What a ${rng.pick(ADJECTIVES)} day," said ${name}.`);
  return sentences.join(" ");
}

/** A true statement about numbers. */
function numberFact(rng: Rng): string {
  const a = rng.integer(0, 99);
  const b = rng.integer(0, 99);
  switch (rng.integer(0, 3)) {
    case 0:
      return `${a} plus ${b} is ${a + b}.`;
    case 1:
      return `${Math.max(a, b)} minus ${Math.min(a, b)} is ${Math.max(a, b) - Math.min(a, b)}.`;
    case 2:
      return `${a} is ${a % 2 === 0 ? "even" : "odd"}.`;
    default:
      return `${a} is ${a === b ? "equal to" : a > b ? "greater than" : "less than"} ${b}.`;
  }
}

/** A true statement about a word. */
function wordFact(rng: Rng): string {
  const word = rng.pick([...ANIMALS, ...THINGS, ...ADJECTIVES]);
  switch (rng.integer(0, 3)) {
    case 0:
      return `The word ${word} has ${word.length} letters.`;
    case 1:
      return `${capitalise(word)} spelled backwards is ${[...word].reverse().join("")}.`;
    case 2:
      return `${capitalise(word)} in capitals is ${word.toUpperCase()}.`;
    default:
      return `The word ${word} starts with ${word[0]} and ends with ${word[word.length - 1]}.`;
  }
}

/** A small key-value record, as in a form or a log. */
function record(rng: Rng): string {
  const name = rng.pick(NAMES);
  return `name: ${name}\npet: ${rng.pick(ANIMALS)}\ncolor: ${rng.pick(ADJECTIVES)}\nage: ${rng.integer(5, 90)}\nplace: ${rng.pick(PLACES).replace("the ", "")}`;
}

/** A request and its correct answer, for the ChatML conversations. */
function request(rng: Rng): [string, string] {
  const word = rng.pick([...ANIMALS, ...THINGS]);
  const a = rng.integer(0, 50);
  const b = rng.integer(0, 50);
  switch (rng.integer(0, 6)) {
    case 0:
      return [`What is ${a} plus ${b}?`, `${a} plus ${b} is ${a + b}.`];
    case 1:
      return [`Spell ${word} backwards.`, [...word].reverse().join("")];
    case 2:
      return [`Write ${word} in capitals.`, word.toUpperCase()];
    case 3:
      return [`How many letters are in ${word}?`, `${word} has ${word.length} letters.`];
    case 4: {
      const items = [rng.pick(ANIMALS), rng.pick(ANIMALS), rng.pick(ANIMALS)];
      return [`Sort these words: ${items.join(", ")}.`, [...items].sort().join(", ")];
    }
    case 5:
      return [`Is ${a} even or odd?`, `${a} is ${a % 2 === 0 ? "even" : "odd"}.`];
    default:
      return [`Tell me a short story.`, story(rng)];
  }
}

/** A ChatML conversation of one to three turns. */
function conversation(rng: Rng): string {
  const turns: string[] = [];
  if (rng.uniform() < 0.3) turns.push("<|im_start|>system\nYou are a helpful assistant.<|im_end|>");
  for (let i = rng.integer(1, 3); i > 0; i--) {
    const [question, answer] = request(rng);
    turns.push(`<|im_start|>user\n${question}<|im_end|>`, `<|im_start|>assistant\n${answer}<|im_end|>`);
  }
  return turns.join("\n");
}

/** One document of the corpus; kinds are mixed so the model sees every style often. */
export function corpusDocument(rng: Rng): string {
  const kind = rng.uniform();
  if (kind < 0.35) return story(rng);
  if (kind < 0.5) return Array.from({ length: rng.integer(2, 5) }, () => numberFact(rng)).join(" ");
  if (kind < 0.65) return Array.from({ length: rng.integer(2, 5) }, () => wordFact(rng)).join(" ");
  if (kind < 0.72) return record(rng);
  return conversation(rng);
}

/** Documents separated by the end-of-text marker, until at least `bytes` bytes of text. */
export function generateCorpus(seed: number, bytes: number): string {
  const rng = new Rng(seed);
  const parts: string[] = [];
  let size = 0;
  while (size < bytes) {
    const document = corpusDocument(rng);
    parts.push(document);
    size += document.length + 14;
  }
  return parts.join("<|endoftext|>");
}
