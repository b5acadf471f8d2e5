//! Chat formatting with the model's own Jinja `chat_template`, rendered by minijinja (with
//! Python-compatible string methods such as `.strip()`), never a hand-written format.

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

/// One chat message.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// Renders `messages` with `template`, ending with the assistant turn's opening when
/// `add_generation_prompt` is set (as Hugging Face's `apply_chat_template`).
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    // A template is code from the model file: bound its work (fuel is spent per
    // instruction; real chat templates use a few thousand) and its output, so a crafted
    // one is refused in milliseconds instead of running for minutes and exhausting memory.
    env.set_fuel(Some(TEMPLATE_FUEL));
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // HF templates call `raise_exception` to reject bad conversations.
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| anyhow!("chat template does not parse: {e}"))?;
    let tmpl = env.get_template("chat").expect("added above");
    let limit = TEMPLATE_OUTPUT_BASE + 4 * messages.iter().map(|m| m.content.len()).sum::<usize>();
    let mut out = Bounded {
        buf: Vec::new(),
        limit,
    };
    let rendered = tmpl.render_captured_to(
        minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        },
        &mut out,
    );
    match rendered {
        Ok(_) => {}
        Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => {
            bail!("chat template refused: it runs more than {TEMPLATE_FUEL} steps")
        }
        Err(_) if out.buf.len() > out.limit => {
            bail!("chat template refused: its output exceeds {limit} bytes")
        }
        Err(e) => return Err(anyhow!("{e}")).context("cannot render chat template"),
    }
    String::from_utf8(out.buf).context("chat template output is not UTF-8")
}

/// Fuel (minijinja instructions) a chat template may spend on one render.
pub const TEMPLATE_FUEL: u64 = 1_000_000;
/// Output a template may produce beyond four times the messages' own bytes.
pub const TEMPLATE_OUTPUT_BASE: usize = 64 * 1024;

/// A writer that fails once `limit` bytes are exceeded (the render then stops).
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() > self.limit {
            return Err(std::io::Error::other("chat template output too large"));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Gemma's chat format (the template of the instruction-tuned Gemma 3 checkpoints, for
/// plain-string messages), used when a Gemma GGUF carries no template, as llama.cpp does.
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}\
{%- if messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\
{%- set loop_messages = messages[1:] -%}\
{%- else -%}\
{%- set first_user_prefix = '' -%}\
{%- set loop_messages = messages -%}\
{%- endif -%}\
{%- for message in loop_messages -%}\
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\
{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}\
{{- message['content'] | trim }}{{ '<end_of_turn>\\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_with_python_methods() {
        let t = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let out = render(t, &[Message::user("  hi ")], true, None, None).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = "{{ raise_exception('no system role') }}";
        let err = render(t, &[], false, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("no system role"));
    }

    #[test]
    fn template_bombs_are_refused_quickly() {
        let t0 = std::time::Instant::now();
        // The audit's bomb: nested loops of 10 000 (1e8 iterations, 33 s and 4.2 GB before).
        let loops = "{% for i in range(10000) %}{% for j in range(10000) %}{% set k = i * j %}{% endfor %}{% endfor %}";
        let err = render(loops, &[Message::user("hi")], true, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("steps"), "{err:#}");
        // Output growth without many steps: a long string repeated.
        let wide = "{% for i in range(1000) %}{{ 'y' * 100000 }}{% endfor %}";
        let err = render(wide, &[Message::user("hi")], true, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("output exceeds"), "{err:#}");
        assert!(t0.elapsed().as_secs() < 10, "took {:?}", t0.elapsed());
    }

    #[test]
    fn gemma_template_renders_turns() {
        let out = render(
            GEMMA_TEMPLATE,
            &[Message::user(" Hi there ")],
            true,
            Some("<bos>"),
            None,
        )
        .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
        );
    }
}
