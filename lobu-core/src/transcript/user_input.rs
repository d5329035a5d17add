//! [`UserInput`]: what a turn's payload says the user sent (its text and images), checked
//! once for every submit and read back when the runtime records the user's message.

use serde_json::Value;

use super::ContentBlock;
use crate::{Error, Result};

/// The most images one message may carry.
pub const MAX_IMAGES: usize = 16;

/// The image types a message may carry.
const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// The user's part of a turn payload: `text` (a non-blank string) and `images` (each
/// `{"data": <base64>, "mimeType": "image/png|jpeg|gif|webp"}`), either or both. Other
/// fields are the agent's own (read them with `Turn::payload_as`).
///
/// ```
/// use lobu_core::transcript::UserInput;
/// let payload = serde_json::json!({
///     "images": [{ "data": "iVBORw0KGgo=", "mimeType": "image/png" }],
///     "order": 42,
/// });
/// let input = UserInput::from_payload(&payload).unwrap();
/// assert_eq!((input.text(), input.content().len()), (None, 1));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserInput {
    text: Option<String>,
    images: Vec<ContentBlock>,
}

impl UserInput {
    /// Read and check a turn's payload: a JSON object whose `text`, if present, is a
    /// non-blank string and whose `images`, if present, is a list of at most [`MAX_IMAGES`]
    /// images; it must hold text, an image or a field of the agent's. Anything else is
    /// `InvalidInput` naming the problem.
    pub fn from_payload(payload: &Value) -> Result<UserInput> {
        let Value::Object(fields) = payload else {
            return Err(Error::invalid("a turn payload must be a JSON object"));
        };
        let text = match fields.get("text") {
            None => None,
            Some(Value::String(text)) if text.trim().is_empty() => {
                return Err(Error::invalid("message text must not be empty"));
            }
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => return Err(Error::invalid("payload field \"text\" must be a string")),
        };
        let images = match fields.get("images") {
            None => Vec::new(),
            Some(Value::Array(items)) => images(items)?,
            Some(_) => return Err(Error::invalid("payload field \"images\" must be a list")),
        };
        if fields.is_empty()
            || (fields.len() == 1 && fields.contains_key("images") && images.is_empty())
        {
            return Err(Error::invalid(
                "a turn payload needs text, an image or a field the agent reads",
            ));
        }
        Ok(UserInput { text, images })
    }

    /// The message text, if the payload has one.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// The message as content blocks: the text first, then the images.
    pub fn content(&self) -> Vec<ContentBlock> {
        let text = self.text.iter().map(ContentBlock::text);
        text.chain(self.images.iter().cloned()).collect()
    }

    /// Whether the payload carries neither text nor images (only the agent's own fields).
    pub fn is_empty(&self) -> bool {
        self.text.is_none() && self.images.is_empty()
    }
}

fn images(items: &[Value]) -> Result<Vec<ContentBlock>> {
    if items.len() > MAX_IMAGES {
        return Err(Error::invalid(format!(
            "a message may carry at most {MAX_IMAGES} images, got {}",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let bad = |why: &str| Error::invalid(format!("image {}: {why}", index + 1));
            let data = item.get("data").and_then(Value::as_str).unwrap_or_default();
            let mime = item
                .get("mimeType")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if data.is_empty() || !data.bytes().all(is_base64) {
                return Err(bad("\"data\" must be non-empty base64"));
            }
            if !IMAGE_TYPES.contains(&mime) {
                return Err(bad(
                    "\"mimeType\" must be image/png, image/jpeg, image/gif or image/webp",
                ));
            }
            Ok(ContentBlock::Image {
                data: data.to_owned(),
                mime_type: mime.to_owned(),
            })
        })
        .collect()
}

fn is_base64(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'=')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(payload: &Value) -> String {
        UserInput::from_payload(payload)
            .expect_err(&payload.to_string())
            .message()
            .to_owned()
    }

    #[test]
    fn text_images_or_the_agents_own_fields_make_a_turn() {
        let text = UserInput::from_payload(&json!({"text": "hi"})).unwrap();
        assert_eq!(text.content(), [ContentBlock::text("hi")]);
        let image = json!({"data": "AAAA", "mimeType": "image/webp"});
        let both = UserInput::from_payload(&json!({"text": "see", "images": [image]})).unwrap();
        assert_eq!(both.content().len(), 2);
        assert!(matches!(both.content()[1], ContentBlock::Image { .. }));
        let custom = UserInput::from_payload(&json!({"order": 42})).unwrap();
        assert!(custom.is_empty());
    }

    #[test]
    fn every_malformed_payload_is_refused_naming_its_problem() {
        assert_eq!(refused(&json!([])), "a turn payload must be a JSON object");
        assert_eq!(
            refused(&json!({"text": " \n"})),
            "message text must not be empty"
        );
        assert!(refused(&json!({"text": 5})).contains("\"text\" must be a string"));
        assert!(refused(&json!({})).contains("needs text, an image"));
        assert!(refused(&json!({"images": []})).contains("needs text, an image"));
        assert!(refused(&json!({"images": {}})).contains("must be a list"));
        let bad_data = json!({"images": [{"data": "not base64!", "mimeType": "image/png"}]});
        assert!(refused(&bad_data).starts_with("image 1: \"data\""));
        let bad_type = json!({"images": [{"data": "AAAA", "mimeType": "text/html"}]});
        assert!(refused(&bad_type).starts_with("image 1: \"mimeType\""));
        let many = vec![json!({"data": "AAAA", "mimeType": "image/png"}); MAX_IMAGES + 1];
        assert!(refused(&json!({"images": many})).contains("at most 16 images"));
    }
}
