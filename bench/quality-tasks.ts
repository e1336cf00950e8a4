/**
 * The fine-tuning tasks of the quality and sweep benches: four small chat tasks generated deterministically
 * from fixed seeds, each with a training set and a held-out evaluation set that shares no prompt
 * with it. They are chosen so the base model cannot already solve them (its pre-training corpus,
 * gpu-runner/pretrain/corpus.ts, has none of their rules, labels or facts):
 *
 *   format   — a new formatting rule: a sentence about a person, in one of two word orders, becomes
 *              the pipe-separated record name|age|pet. Held out: sentences never trained on.
 *   recall   — a made-up mapping of 80 fictional codes to 8 colour names the base never saw, asked
 *              with four phrasings. Each code is trained with three phrasings and evaluated with the
 *              fourth, so the eval asks for trained facts in words never trained on.
 *   classify — a three-way mood label (sunny, stormy, misty: labels the base never saw) of a
 *              sentence, decided by its feeling word among distracting names, places and phrasings.
 *              Held out: sentences never trained on.
 *   extract  — a multi-step extraction: from a sentence naming a person, an animal, a place, a
 *              weekday and a count (in one of four word orders), write `day:place:count`: three
 *              fields found among distractors and put in an order none of the sentences uses.
 *              Held out: sentences never trained on.
 *
 * Every example is short (at most 80 tokens with the ChatML template of the byte-level base).
 */
import { ANIMALS, NAMES } from "../gpu-runner/pretrain/corpus.ts";
import { Rng } from "../gpu-runner/random.ts";

/** One chat example: the user's prompt and the exact answer expected from the assistant. */
export interface QualityExample {
  prompt: string;
  answer: string;
}

/** A task: what it tests, its training examples and its held-out evaluation examples. */
export interface QualityTask {
  name: string;
  description: string;
  train: QualityExample[];
  eval: QualityExample[];
}

/** How many examples each task generates. */
export interface TaskSizes {
  train: number;
  eval: number;
}

const MOOD_PLACES = ["park", "river", "hill", "farm", "lake", "shop", "zoo", "beach", "fair", "mill"];
const COLOURS = ["teal", "amber", "violet", "coral", "olive", "ivory", "navy", "plum"];
const RECALL_CODES = 80;
const RECALL_TEMPLATES: ((code: string) => string)[] = [
  (code) => `What colour is ${code}?`,
  (code) => `Colour of ${code}?`,
  (code) => `${code} is which colour?`,
  (code) => `Name the colour of ${code}.`,
];
const MOODS: Record<string, string> = {
  glad: "sunny",
  proud: "sunny",
  happy: "sunny",
  excited: "sunny",
  tired: "stormy",
  angry: "stormy",
  sad: "stormy",
  hungry: "stormy",
  curious: "misty",
  calm: "misty",
  sleepy: "misty",
  dreamy: "misty",
};
const FEELINGS = Object.keys(MOODS);
const MOOD_TEMPLATES: ((name: string, feeling: string, place: string) => string)[] = [
  (name, feeling, place) => `Mood? ${name} was ${feeling} at the ${place}.`,
  (name, feeling, place) => `Mood? At the ${place}, ${name} felt ${feeling}.`,
  (name, feeling, place) => `Mood? ${name} left the ${place} ${feeling}.`,
];

/**
 * Draws distinct examples (by prompt) until `sizes.train + sizes.eval` exist, then splits them:
 * the first ones train, the rest evaluate, so no evaluation prompt is ever trained on.
 */
function distinctSplit(sizes: TaskSizes, seed: number, draw: (rng: Rng) => QualityExample): { train: QualityExample[]; eval: QualityExample[] } {
  const rng = new Rng(seed);
  const seen = new Set<string>();
  const examples: QualityExample[] = [];
  for (let attempts = 0; examples.length < sizes.train + sizes.eval; attempts++) {
    if (attempts > 100 * (sizes.train + sizes.eval)) throw new Error(`cannot draw ${sizes.train + sizes.eval} distinct examples (seed ${seed})`);
    const example = draw(rng);
    if (seen.has(example.prompt)) continue;
    seen.add(example.prompt);
    examples.push(example);
  }
  return { train: examples.slice(0, sizes.train), eval: examples.slice(sizes.train) };
}

/** The formatting task: a sentence in either word order becomes `name|age|pet`. */
export function formatTask(sizes: TaskSizes, seed = 101): QualityTask {
  return {
    name: "format",
    description: "sentence → name|age|pet record (new formatting rule, two word orders)",
    ...distinctSplit(sizes, seed, (rng) => {
      const name = rng.pick(NAMES);
      const age = rng.integer(5, 90);
      const animal = rng.pick(ANIMALS);
      const pet = `${/^[aeiou]/.test(animal) ? "an" : "a"} ${animal}`;
      const prompt = rng.uniform() < 0.5 ? `${name} is ${age} and has ${pet}.` : `${name} has ${pet} and is ${age}.`;
      return { prompt, answer: `${name}|${age}|${animal}` };
    }),
  };
}

/**
 * The recall task: a fixed code → colour table (10 codes per colour). Each code's evaluation
 * phrasing is template (index mod 4), trained with the other three, so the sizes are fixed:
 * 3 · codes training examples and one evaluation example per code (the sizes argument caps them).
 */
export function recallTask(sizes: TaskSizes, seed = 202): QualityTask {
  const rng = new Rng(seed);
  const codes: string[] = [];
  const seen = new Set<string>();
  while (codes.length < RECALL_CODES) {
    const letters = String.fromCharCode(65 + rng.integer(0, 25), 65 + rng.integer(0, 25));
    const code = `${letters}-${rng.integer(10, 99)}`;
    if (seen.has(code)) continue;
    seen.add(code);
    codes.push(code);
  }
  // A balanced, shuffled assignment: code i gets colours[order[i] mod 8].
  const order = codes.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const train: QualityExample[] = [];
  const evaluation: QualityExample[] = [];
  codes.forEach((code, i) => {
    const answer = COLOURS[order[i]! % COLOURS.length]!;
    const heldOut = i % RECALL_TEMPLATES.length;
    RECALL_TEMPLATES.forEach((template, t) => (t === heldOut ? evaluation : train).push({ prompt: template(code), answer }));
  });
  // Training examples are interleaved by code already; shuffle so batches mix phrasings too.
  const shuffled = [...train];
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
  }
  return {
    name: "recall",
    description: `${RECALL_CODES} made-up codes → 8 new colour names; eval asks each code in its held-out phrasing`,
    train: shuffled.slice(0, sizes.train),
    eval: evaluation.slice(0, sizes.eval),
  };
}

/** The classification task: the mood label of a sentence's feeling word, among distractors. */
export function classifyTask(sizes: TaskSizes, seed = 303): QualityTask {
  return {
    name: "classify",
    description: "sentence → sunny|stormy|misty by its feeling word (12 feelings, new labels)",
    ...distinctSplit(sizes, seed, (rng) => {
      const feeling = rng.pick(FEELINGS);
      return { prompt: rng.pick(MOOD_TEMPLATES)(rng.pick(NAMES), feeling, rng.pick(MOOD_PLACES)), answer: MOODS[feeling]! };
    }),
  };
}

const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const plural = (animal: string) => ({ fox: "foxes", mouse: "mice", deer: "deer" })[animal] ?? `${animal}s`;
const EXTRACT_TEMPLATES: ((f: { name: string; place: string; day: string; count: number; animal: string }) => string)[] = [
  (f) => `${f.name} saw ${f.count} ${plural(f.animal)} at the ${f.place} on ${f.day}.`,
  (f) => `On ${f.day}, ${f.name} saw ${f.count} ${plural(f.animal)} at the ${f.place}.`,
  (f) => `At the ${f.place} on ${f.day}, ${f.name} fed ${f.count} ${plural(f.animal)}.`,
  (f) => `${f.count} ${plural(f.animal)} met ${f.name} at the ${f.place} on ${f.day}.`,
];

/** The extraction task: weekday, place and count out of a sentence with distractors, as `day:place:count`. */
export function extractTask(sizes: TaskSizes, seed = 404): QualityTask {
  return {
    name: "extract",
    description: "sentence → day:place:count (three fields among distractors, four word orders, a new order)",
    ...distinctSplit(sizes, seed, (rng) => {
      const fields = { name: rng.pick(NAMES), place: rng.pick(MOOD_PLACES), day: rng.pick(WEEKDAYS), count: rng.integer(2, 19), animal: rng.pick(ANIMALS) };
      return { prompt: rng.pick(EXTRACT_TEMPLATES)(fields), answer: `${fields.day}:${fields.place}:${fields.count}` };
    }),
  };
}

/** The quality bench's three tasks at the given sizes (recall has at most 240 training and 80 eval examples). */
export function qualityTasks(sizes: TaskSizes): QualityTask[] {
  return [formatTask(sizes), recallTask(sizes), classifyTask(sizes)];
}

/** The sweep's four tasks: the quality bench's three and the extraction task. */
export function sweepTasks(sizes: TaskSizes): QualityTask[] {
  return [...qualityTasks(sizes), extractTask(sizes)];
}

/** A task's examples as OpenAI chat JSONL, the trainer's input. */
export function toChatJsonl(examples: readonly QualityExample[]): string {
  return examples
    .map(({ prompt, answer }) =>
      JSON.stringify({
        messages: [
          { role: "user", content: prompt },
          { role: "assistant", content: answer },
        ],
      }),
    )
    .join("\n");
}
