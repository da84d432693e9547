//! How the words after `mrun --each` split into what every job runs (the program and its fixed
//! arguments) and the arguments that make one job each. It refuses, in one sentence showing
//! the command to type instead, words whose split it would have to guess; it never reads stdin.
//!
//! The rule, GNU parallel's where it has one:
//! - `COMMAND FIXED... ::: ARG...`: one job `COMMAND FIXED... ARG` per ARG (at least one).
//! - `COMMAND OPTION... ARG...`: the option words right after COMMAND (those starting with
//!   `-`; `--` ends them) are fixed, every further word is one job's argument. Refused when the
//!   last option word may take the next word as its value (`sort -o out a b`: is `out` a job?):
//!   only digits after one dash (`-9`, `-T0`), a `--name=value` or `--` cannot; and when a word
//!   starting with `-` comes after the arguments began (`gzip a -k b`), unless `--` came first.
//! - `COMMAND OPTION...` alone: the jobs' arguments are the lines of stdin.
//! - `COMMAND FIXED... :::: FILE`: the jobs' arguments are the lines of FILE (`-`: stdin),
//!   whatever FIXED ends with (`ls | mrun --each sh -c 'gzip -9 "$0"' :::: -`).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{bail, Result};

/// Separates the fixed arguments from the per-job arguments, as in GNU parallel.
pub const SEPARATOR: &str = ":::";
/// Separates the fixed arguments from a file of per-job arguments, as in GNU parallel.
pub const FILE_SEPARATOR: &str = "::::";

/// How many words of a long argument list a suggested command shows before `...`.
const SHOWN_ARGUMENTS: usize = 2;

/// How the words after `--each` split up.
#[derive(Debug, PartialEq, Eq)]
pub struct Template {
    /// The program and the arguments every job gets before its own.
    pub fixed: Vec<OsString>,
    /// Where the jobs' own arguments come from.
    pub per_job: Arguments,
}

/// The jobs' own arguments: one job each.
#[derive(Debug, PartialEq, Eq)]
pub enum Arguments {
    Words(Vec<OsString>),
    /// The non-empty lines of a file, or of stdin (`None`).
    Lines(Option<PathBuf>),
}

impl Template {
    /// Splits `words` by the rule above. `typed_as` is how the user typed `mrun` and its own
    /// options (`mrun --each -j 4`), to show the command to type instead in a refusal.
    pub fn parse(words: Vec<OsString>, typed_as: &str) -> Result<Template> {
        let is = |w: &OsString, sep: &str| w.as_os_str() == OsStr::new(sep);
        if let Some(other) = words.iter().find(|w| {
            w.as_bytes().starts_with(SEPARATOR.as_bytes())
                && !is(w, SEPARATOR)
                && !is(w, FILE_SEPARATOR)
        }) {
            bail!(
                "`{}` (one of GNU parallel's ways to combine inputs) is not understood by mrun \
                 --each; give the arguments after `{SEPARATOR}`, or a file of them, one per \
                 line, after `{FILE_SEPARATOR}`",
                other.to_string_lossy()
            );
        }
        let separators: Vec<usize> = words
            .iter()
            .enumerate()
            .filter(|(_, w)| is(w, SEPARATOR) || is(w, FILE_SEPARATOR))
            .map(|(i, _)| i)
            .collect();
        let at = match separators[..] {
            [] => return split_at_options(words, typed_as),
            [at] => at,
            _ => bail!(
                "`{SEPARATOR}` or `{FILE_SEPARATOR}` appears more than once: mrun --each takes \
                 one list of arguments (GNU parallel's combinations of several are not \
                 supported)"
            ),
        };
        let mut fixed = words;
        let after = fixed.split_off(at + 1);
        let separator = fixed.pop().unwrap_or_default();
        if fixed.is_empty() {
            bail!(
                "--each needs a command before {}",
                separator.to_string_lossy()
            );
        }
        if is(&separator, FILE_SEPARATOR) {
            let [file] = &after[..] else {
                bail!(
                    "`{FILE_SEPARATOR}` takes one file of arguments, one per line (`-` for \
                     stdin): `{typed_as} {} {FILE_SEPARATOR} FILE`",
                    shown(&fixed, &[])
                );
            };
            let file = (file.as_os_str() != OsStr::new("-")).then(|| PathBuf::from(file));
            return Ok(Template {
                fixed,
                per_job: Arguments::Lines(file),
            });
        }
        if after.is_empty() {
            bail!(
                "nothing follows `{SEPARATOR}`, so there is no job to run: give the jobs' \
                 arguments after it (`{typed_as} {} {SEPARATOR} ARG...`), or write \
                 `{FILE_SEPARATOR} -` in its place to read them from stdin, one per line",
                shown(&fixed, &[])
            );
        }
        Ok(Template {
            fixed,
            per_job: Arguments::Words(after),
        })
    }
}

/// A word that reads as an option: `-x`, `--name`, `--` (a lone `-` is an argument, as in
/// getopt).
fn is_option(word: &OsStr) -> bool {
    word.len() > 1 && word.as_bytes().starts_with(b"-")
}

/// Whether the option word `word` may take the next word as its value (getopt's rule: a short
/// option taking a value that ends the word, or a long option without `=`). Digits after one
/// dash are taken for a value (`-9`, `-T0`, `-n5`), not for options that would take the next.
fn may_take_value(word: &OsStr) -> bool {
    let bytes = word.as_bytes();
    if bytes == b"--" {
        false
    } else if bytes.starts_with(b"--") {
        !bytes.contains(&b'=')
    } else {
        !bytes.last().is_some_and(u8::is_ascii_digit)
    }
}

/// The rule without `:::`: COMMAND, its option words, then one job per further word (or stdin).
fn split_at_options(words: Vec<OsString>, typed_as: &str) -> Result<Template> {
    let Some(first_argument) = words
        .iter()
        .skip(1)
        .position(|w| !is_option(w) || w.as_os_str() == OsStr::new("--"))
        .map(|i| i + 1)
    else {
        if words.is_empty() {
            bail!("--each needs a command");
        }
        return Ok(Template {
            fixed: words,
            per_job: Arguments::Lines(None),
        });
    };
    let mut fixed = words;
    let mut per_job = fixed.split_off(first_argument);
    if per_job
        .first()
        .is_some_and(|w| w.as_os_str() == OsStr::new("--"))
    {
        // `--` ends the options: it goes to every job, and what follows is taken as it is.
        fixed.push(per_job.remove(0));
        let per_job = if per_job.is_empty() {
            Arguments::Lines(None)
        } else {
            Arguments::Words(per_job)
        };
        return Ok(Template { fixed, per_job });
    }
    let last_option = fixed.get(1..).and_then(<[OsString]>::last);
    if let (Some(option), Some(value)) = (last_option, per_job.first()) {
        if may_take_value(option) {
            let mut with_value = fixed.clone();
            with_value.push(value.clone());
            bail!(
                "cannot tell whether `{}` is the value of `{}` or a job's argument: write \
                 `{typed_as} {} {SEPARATOR} {}` if it is the value, or `{typed_as} {} \
                 {SEPARATOR} {}` if it is an argument",
                value.to_string_lossy(),
                option.to_string_lossy(),
                shown(&with_value, &[]),
                or_placeholder(shown(&per_job[1..], &[])),
                shown(&fixed, &[]),
                shown(&per_job, &[])
            );
        }
    }
    if let Some(stray) = per_job.iter().position(|w| is_option(w)) {
        let mut with_options = fixed.clone();
        with_options.extend(per_job.iter().filter(|w| is_option(w)).cloned());
        let plain: Vec<OsString> = per_job.iter().filter(|w| !is_option(w)).cloned().collect();
        bail!(
            "`{}` comes after the jobs' arguments began, so it may be an option or an argument: \
             write `{typed_as} {} {SEPARATOR} {}` if every job takes it as an option, or \
             `{typed_as} {} {SEPARATOR} {}` if it is an argument",
            per_job[stray].to_string_lossy(),
            shown(&with_options, &[]),
            or_placeholder(shown(&plain, &[])),
            shown(&fixed, &[]),
            shown(&per_job, &[stray])
        );
    }
    Ok(Template {
        fixed,
        per_job: Arguments::Words(per_job),
    })
}

/// `ARG...` in place of an empty list of arguments.
fn or_placeholder(list: String) -> String {
    if list.is_empty() {
        "ARG...".to_string()
    } else {
        list
    }
}

/// `words` quoted for a shell, a long list cut to its first [`SHOWN_ARGUMENTS`] words and those
/// at `keep` (with their neighbours), each gap shown as `...`.
fn shown(words: &[OsString], keep: &[usize]) -> String {
    let long = words.len() > SHOWN_ARGUMENTS + 2;
    let wanted =
        |i: usize| !long || i < SHOWN_ARGUMENTS || keep.iter().any(|&k| i + 1 >= k && i <= k + 1);
    let mut parts: Vec<String> = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if wanted(i) {
            parts.push(quoted(word));
        } else if parts.last().is_none_or(|p| p != "...") {
            parts.push("...".to_string());
        }
    }
    parts.join(" ")
}

/// One word as a shell reads it back.
pub fn quoted(word: &OsStr) -> String {
    let text = word.to_string_lossy();
    shlex::try_quote(&text)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn split(list: &[&str]) -> Template {
        Template::parse(words(list), "mrun --each").expect("a batch")
    }

    fn refusal(list: &[&str]) -> String {
        match Template::parse(words(list), "mrun --each") {
            Ok(t) => panic!("{list:?} was taken as {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn without_separator_each_further_word_is_a_job() {
        let t = split(&["gzip", "a.txt", "b.txt"]);
        assert_eq!(t.fixed, words(&["gzip"]));
        assert_eq!(t.per_job, Arguments::Words(words(&["a.txt", "b.txt"])));
    }

    #[test]
    fn leading_option_words_are_fixed() {
        let t = split(&["gzip", "-9", "--rsyncable", "--suffix=.z", "-T0", "a", "b"]);
        assert_eq!(
            t.fixed,
            words(&["gzip", "-9", "--rsyncable", "--suffix=.z", "-T0"])
        );
        assert_eq!(t.per_job, Arguments::Words(words(&["a", "b"])));
    }

    #[test]
    fn options_alone_take_the_arguments_from_stdin() {
        let t = split(&["gzip", "-9"]);
        assert_eq!(
            (t.fixed, t.per_job),
            (words(&["gzip", "-9"]), Arguments::Lines(None))
        );
        let t = split(&["sort", "-o"]);
        assert_eq!(
            (t.fixed, t.per_job),
            (words(&["sort", "-o"]), Arguments::Lines(None))
        );
        let t = split(&["gzip"]);
        assert_eq!(
            (t.fixed, t.per_job),
            (words(&["gzip"]), Arguments::Lines(None))
        );
    }

    #[test]
    fn a_lone_dash_is_an_argument() {
        let t = split(&["cat", "-", "a"]);
        assert_eq!(t.fixed, words(&["cat"]));
        assert_eq!(t.per_job, Arguments::Words(words(&["-", "a"])));
    }

    #[test]
    fn double_dash_ends_the_options_and_goes_to_every_job() {
        let t = split(&["rm", "-f", "--", "-weird", "b"]);
        assert_eq!(t.fixed, words(&["rm", "-f", "--"]));
        assert_eq!(t.per_job, Arguments::Words(words(&["-weird", "b"])));
        let t = split(&["rm", "--"]);
        assert_eq!(
            (t.fixed, t.per_job),
            (words(&["rm", "--"]), Arguments::Lines(None))
        );
    }

    #[test]
    fn an_option_that_may_take_the_next_word_is_refused_with_both_readings() {
        assert_eq!(
            refusal(&["sort", "-o", "out", "a", "b"]),
            "cannot tell whether `out` is the value of `-o` or a job's argument: write \
             `mrun --each sort -o out ::: a b` if it is the value, or \
             `mrun --each sort -o ::: out a b` if it is an argument"
        );
        let long = refusal(&["gzip", "--best", "a"]);
        assert!(
            long.contains("`mrun --each gzip --best a ::: ARG...` if it is the value")
                && long.contains("`mrun --each gzip --best ::: a` if it is an argument"),
            "{long}"
        );
        assert!(refusal(&["tar", "-cf", "x.tar", "a"]).contains("the value of `-cf`"));
    }

    #[test]
    fn an_option_after_the_arguments_is_refused() {
        assert_eq!(
            refusal(&["gzip", "-9", "a", "-k", "b"]),
            "`-k` comes after the jobs' arguments began, so it may be an option or an \
             argument: write `mrun --each gzip -9 -k ::: a b` if every job takes it as an \
             option, or `mrun --each gzip -9 ::: a -k b` if it is an argument"
        );
    }

    #[test]
    fn separator_splits_fixed_from_per_job_arguments_taken_as_they_are() {
        let t = split(&["sort", "-o", "out", ":::", "a", "-k", "b"]);
        assert_eq!(t.fixed, words(&["sort", "-o", "out"]));
        assert_eq!(t.per_job, Arguments::Words(words(&["a", "-k", "b"])));
    }

    #[test]
    fn a_file_of_arguments_after_four_colons_whatever_the_fixed_words_end_with() {
        let t = split(&["sh", "-c", "gzip -9 \"$0\"", "::::", "-"]);
        assert_eq!(t.fixed, words(&["sh", "-c", "gzip -9 \"$0\""]));
        assert_eq!(t.per_job, Arguments::Lines(None));
        let t = split(&["sort", "-o", "::::", "list"]);
        assert_eq!(t.per_job, Arguments::Lines(Some(PathBuf::from("list"))));
    }

    #[test]
    fn separator_with_nothing_after_it_is_refused() {
        assert_eq!(
            refusal(&["gzip", "-9", ":::"]),
            "nothing follows `:::`, so there is no job to run: give the jobs' arguments \
             after it (`mrun --each gzip -9 ::: ARG...`), or write `:::: -` in its place to \
             read them from stdin, one per line"
        );
    }

    #[test]
    fn a_separator_without_command_or_twice_is_refused() {
        assert!(refusal(&[":::", "a"]).contains("needs a command"));
        assert!(refusal(&["echo", ":::", "a", ":::", "b"]).contains("more than once"));
        assert!(refusal(&["echo", ":::", "a", "::::", "b"]).contains("more than once"));
        assert!(refusal(&["echo", ":::+", "a"]).contains("`:::+`"));
        assert!(refusal(&["echo", "::::", "a", "b"]).contains("one file"));
        assert!(refusal(&["echo", "::::"]).contains("one file"));
    }

    #[test]
    fn suggestions_quote_words_and_cut_long_lists() {
        let files: Vec<String> = (1..=50).map(|i| format!("f {i}.txt")).collect();
        let mut list = vec!["gzip", "-k"];
        list.extend(files.iter().map(String::as_str));
        let text = refusal(&list);
        assert!(
            text.contains("`mrun --each gzip -k ::: 'f 1.txt' 'f 2.txt' ...` if it is an argument"),
            "{text}"
        );
        let mut list = vec!["gzip"];
        list.extend(files.iter().map(String::as_str));
        list.insert(20, "-k");
        let text = refusal(&list);
        assert!(
            text.contains(
                "`mrun --each gzip ::: 'f 1.txt' 'f 2.txt' ... 'f 19.txt' -k 'f 20.txt' ...`"
            ),
            "{text}"
        );
    }
}
