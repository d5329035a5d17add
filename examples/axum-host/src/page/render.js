// Turning the API's data into the page's nodes.
import markdownit from "/page/vendor/markdown-it.min.js";

// `html: false` escapes any raw HTML in the model's text, and markdown-it refuses
// `javascript:`/`vbscript:`/`file:`/`data:` links: nothing from a model's reply runs.
export const md = markdownit({ html: false, linkify: true, breaks: true });
const openLinkRule = md.renderer.rules.link_open ?? ((t, i, o, e, self) => self.renderToken(t, i, o));
md.renderer.rules.link_open = (tokens, i, options, env, self) => {
  tokens[i].attrSet("target", "_blank");
  tokens[i].attrSet("rel", "noopener noreferrer");
  return openLinkRule(tokens, i, options, env, self);
};

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function addUsage(total, usage) {
  const sum = total ?? { input: 0, output: 0 };
  return { input: sum.input + (usage.input ?? 0), output: sum.output + (usage.output ?? 0) };
}

export function showUsage(bubble, usage) {
  let line = bubble.querySelector(":scope > .usage");
  if (!line) { line = el("span", "usage"); bubble.append(line); }
  line.textContent = `${usage.input} tokens in · ${usage.output} out`;
}

export function textOf(content) {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return content == null ? "" : JSON.stringify(content);
  return content.filter((b) => b.type === "text").map((b) => b.text).join("\n\n");
}

function details(summary, body) {
  const box = el("details");
  box.append(el("summary", "", summary), el("pre", "", body));
  return box;
}

/** The history's nodes: one bubble per message, each turn's token usage on its last answer. */
export function historyNodes(messages) {
  const nodes = [];
  let usage = null, lastAnswer = null;
  const closeTurn = () => { if (lastAnswer && usage) showUsage(lastAnswer, usage); usage = null; lastAnswer = null; };
  for (const m of messages) {
    if (m.type === "message" && m.role === "user" && !m.isVerbose) {
      closeTurn();
      const bubble = el("div", "msg user", textOf(m.content));
      bubble.dataset.at = Date.parse(m.timestamp ?? "") || 0;
      nodes.push(bubble);
    } else if (m.type === "message" && m.role === "assistant") {
      const bubble = el("div", "msg assistant");
      const text = textOf(m.content);
      if (text) bubble.innerHTML = md.render(text);
      for (const call of (Array.isArray(m.content) ? m.content : []).filter((b) => b.type === "toolCall")) {
        bubble.append(details(`→ ${call.name}`, JSON.stringify(call.arguments ?? {}, null, 2)));
      }
      if (m.usage) usage = addUsage(usage, m.usage);
      lastAnswer = bubble;
      nodes.push(bubble);
    } else if (m.role === "toolResult") {
      const note = el("div", "msg note");
      note.append(details(`tool result`, textOf(m.content)));
      nodes.push(note);
    } else if (m.type === "model_change") {
      nodes.push(el("div", "msg note", `model: ${m.model ?? textOf(m.content)}`));
    } else if (!m.isVerbose) {
      nodes.push(el("div", "msg note", `${m.type}: ${textOf(m.content)}`));
    }
  }
  closeTurn();
  return nodes;
}
