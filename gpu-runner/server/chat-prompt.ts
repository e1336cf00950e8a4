/**
 * A chat request's prompt: its messages, tool calls and tool results through the model's chat
 * template. A template that renders `tools` (Qwen2.5, Qwen3, Llama 3.1) gets them as transformers
 * passes them; for one that does not (the shipped model's ChatML), the functions and the format
 * of a call are described in a system message, and past calls are written in that format.
 */
import { badRequest } from "../../src/errors.ts";
import type { ChatCompletionRequest } from "../../src/protocol/openai.ts";
import { formatToolCalls, type ToolCallFormat } from "../generate/grammar/index.ts";
import type { ChatMessage, ChatTemplateOptions, TextTokenizer } from "../tokenizer/tokenizer.ts";

/** Renders a chat request into the prompt text, ending with the assistant's turn opening. */
export function renderChatPrompt(tokenizer: TextTokenizer, request: ChatCompletionRequest, format: ToolCallFormat): string {
  const native = tokenizer.templateTakesTools;
  const offered = request.tool_choice === "none" ? [] : request.tools;
  const messages: ChatMessage[] = request.messages.map((message) => {
    const role = message.role === "developer" ? "system" : message.role;
    if (message.tool_calls === undefined) {
      return message.role === "tool" ? { role, content: message.content, tool_call_id: message.tool_call_id } : { role, content: message.content };
    }
    if (native) {
      const calls = message.tool_calls.map((call) => ({
        type: "function" as const,
        function: { name: call.function.name, arguments: parsedArguments(call.function.arguments) },
      }));
      return { role, content: message.content, tool_calls: calls };
    }
    const written = formatToolCalls(
      message.tool_calls.map((call) => ({ name: call.function.name, arguments: call.function.arguments })),
      format,
    );
    return { role, content: message.content === "" ? written : `${message.content}\n${written}` };
  });
  const options: ChatTemplateOptions = { addGenerationPrompt: true };
  if (offered.length > 0 && native) {
    options.tools = offered.map((tool) => ({
      type: "function",
      function: { name: tool.name, ...(tool.description === undefined ? {} : { description: tool.description }), parameters: tool.parameters },
    }));
  } else if (offered.length > 0) {
    const instructions = toolInstructions(offered, format);
    if (messages[0]?.role === "system") messages[0] = { ...messages[0], content: `${messages[0].content}\n\n${instructions}` };
    else messages.unshift({ role: "system", content: instructions });
  }
  try {
    return tokenizer.applyChatTemplate(messages, options);
  } catch (error) {
    // A template may refuse a conversation (roles out of order, a role it does not know).
    throw badRequest((error as Error).message, "messages");
  }
}

// Clients send arguments as JSON text; templates expect the object (transformers parses it too).
function parsedArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function toolInstructions(tools: ChatCompletionRequest["tools"], format: ToolCallFormat): string {
  const signatures = tools.map((tool) =>
    JSON.stringify({ name: tool.name, ...(tool.description === undefined ? {} : { description: tool.description }), parameters: tool.parameters }),
  );
  const example = `${format.prefix}{"name": <name>, "${format.argumentsKey}": <arguments>}${format.suffix}`;
  return `Functions you may call:\n${signatures.join("\n")}\nCall one as ${example}`;
}
