//! The message view of one direction of an association: command sets are reassembled whole
//! (they are small), data set fragments pass through as borrowed chunks, never accumulated.

use crate::dimse::{Command, CommandError, MAX_COMMAND_SET};
use crate::pdu::Pdv;

/// What one PDV meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A command fragment was buffered; the command set is not complete yet.
    CommandPartial,
    /// A whole command set: its raw bytes (to relay) and its decoded form (boxed: a decoded
    /// command is far larger than the other steps).
    Command {
        context_id: u8,
        raw: Vec<u8>,
        command: Box<Command>,
    },
    /// A data set fragment for the current message.
    Data {
        context_id: u8,
        data: &'a [u8],
        is_last: bool,
    },
}

/// A protocol violation in the PDV stream (answered with A-ABORT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error("data set fragment without a preceding command that announced one")]
    UnexpectedData,
    #[error("command fragment while the data set of the previous message is still incomplete")]
    UnexpectedCommand,
    #[error("fragment on presentation context {got} while the message uses context {expected}")]
    ContextSwitch { expected: u8, got: u8 },
    #[error(transparent)]
    Command(#[from] CommandError),
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Command {
        context_id: u8,
        buf: Vec<u8>,
    },
    Data {
        context_id: u8,
    },
}

/// Per-direction message assembler.
#[derive(Debug, Default)]
pub struct Assembler {
    state: State,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// True between messages (no command or data set in progress).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    pub fn push<'a>(&mut self, pdv: Pdv<'a>) -> Result<Step<'a>, AssemblyError> {
        match (&mut self.state, pdv.is_command) {
            (State::Data { .. }, true) => Err(AssemblyError::UnexpectedCommand),
            (State::Idle, false) => Err(AssemblyError::UnexpectedData),
            (State::Data { context_id }, false) => {
                let context_id = *context_id;
                if pdv.context_id != context_id {
                    return Err(AssemblyError::ContextSwitch {
                        expected: context_id,
                        got: pdv.context_id,
                    });
                }
                if pdv.is_last {
                    self.state = State::Idle;
                }
                Ok(Step::Data {
                    context_id,
                    data: pdv.data,
                    is_last: pdv.is_last,
                })
            }
            (State::Command { .. }, false) => Err(AssemblyError::UnexpectedData),
            (State::Idle, true) => {
                self.state = State::Command {
                    context_id: pdv.context_id,
                    buf: Vec::new(),
                };
                self.push_command(pdv)
            }
            (State::Command { .. }, true) => self.push_command(pdv),
        }
    }

    fn push_command<'a>(&mut self, pdv: Pdv<'a>) -> Result<Step<'a>, AssemblyError> {
        let State::Command { context_id, buf } = &mut self.state else {
            return Err(AssemblyError::UnexpectedCommand);
        };
        if pdv.context_id != *context_id {
            return Err(AssemblyError::ContextSwitch {
                expected: *context_id,
                got: pdv.context_id,
            });
        }
        if buf.len() + pdv.data.len() > MAX_COMMAND_SET {
            return Err(CommandError::TooLarge.into());
        }
        buf.extend_from_slice(pdv.data);
        if !pdv.is_last {
            return Ok(Step::CommandPartial);
        }
        let context_id = *context_id;
        let raw = std::mem::take(buf);
        let command = Command::decode(&raw)?;
        self.state = if command.has_data_set() {
            State::Data { context_id }
        } else {
            State::Idle
        };
        Ok(Step::Command {
            context_id,
            raw,
            command: Box::new(command),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dimse::encode_request;
    use crate::types::CommandField;

    fn pdv(ctx: u8, cmd: bool, last: bool, data: &[u8]) -> Pdv<'_> {
        Pdv {
            context_id: ctx,
            is_command: cmd,
            is_last: last,
            data,
        }
    }

    #[test]
    fn fragmented_store() {
        let cmd = encode_request(
            CommandField::CStoreRq,
            1,
            "1.2.840.10008.5.1.4.1.1.2",
            Some("1.2.3"),
            true,
        );
        let (a, b) = cmd.split_at(10);
        let mut asm = Assembler::new();
        assert_eq!(
            asm.push(pdv(1, true, false, a)).unwrap(),
            Step::CommandPartial
        );
        match asm.push(pdv(1, true, true, b)).unwrap() {
            Step::Command { raw, command, .. } => {
                assert_eq!(raw, cmd);
                assert_eq!(command.field, Some(1));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            asm.push(pdv(1, false, false, b"xx")).unwrap(),
            Step::Data { is_last: false, .. }
        ));
        assert_eq!(
            asm.push(pdv(3, false, true, b"yy")),
            Err(AssemblyError::ContextSwitch {
                expected: 1,
                got: 3
            })
        );
        assert!(matches!(
            asm.push(pdv(1, false, true, b"yy")).unwrap(),
            Step::Data { is_last: true, .. }
        ));
        assert!(asm.is_idle());
        assert_eq!(
            asm.push(pdv(1, false, true, b"zz")),
            Err(AssemblyError::UnexpectedData)
        );
    }

    #[test]
    fn echo_has_no_data() {
        let cmd = encode_request(CommandField::CEchoRq, 1, "1.2.840.10008.1.1", None, false);
        let mut asm = Assembler::new();
        assert!(matches!(
            asm.push(pdv(1, true, true, &cmd)).unwrap(),
            Step::Command { .. }
        ));
        assert!(asm.is_idle());
    }

    #[test]
    fn command_during_data_is_an_error() {
        let cmd = encode_request(
            CommandField::CStoreRq,
            1,
            "1.2.840.10008.5.1.4.1.1.2",
            Some("1.2.3"),
            true,
        );
        let mut asm = Assembler::new();
        asm.push(pdv(1, true, true, &cmd)).unwrap();
        assert_eq!(
            asm.push(pdv(1, true, true, &cmd)),
            Err(AssemblyError::UnexpectedCommand)
        );
    }

    #[test]
    fn oversized_command() {
        let big = vec![0u8; 40_000];
        let mut asm = Assembler::new();
        assert_eq!(
            asm.push(pdv(1, true, false, &big)).unwrap(),
            Step::CommandPartial
        );
        assert!(asm.push(pdv(1, true, false, &big)).is_err());
    }
}
