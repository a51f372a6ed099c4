//! Readable tables and JSON, as `docker ... ls` prints them.

use serde::Serialize;

use super::Format;
use crate::wire::TaskView;

pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")) + "\n"
}

pub fn print_tasks(tasks: &[TaskView], format: Format) {
    match format {
        Format::Json => print!("{}", json(&tasks)),
        Format::Table => {
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| {
                    let addrs: Vec<String> = t
                        .addresses
                        .iter()
                        .map(|a| format!("{}={}", a.network, a.address.addr()))
                        .collect();
                    let state = match t.desired {
                        crate::model::DesiredState::Shutdown => "shutdown".to_string(),
                        crate::model::DesiredState::Running => t.state.to_string(),
                        crate::model::DesiredState::Unknown => "unknown".to_string(),
                    };
                    vec![
                        t.name.clone(),
                        if t.node.is_empty() {
                            "-".to_string()
                        } else {
                            t.node.clone()
                        },
                        state,
                        addrs.join(","),
                        t.message.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["NAME", "NODE", "STATE", "ADDRESSES", "ERROR"], &rows)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align() {
        let t = super::table(
            &["NAME", "DRIVER"],
            &[
                vec!["app".into(), "overlay".into()],
                vec!["longer-name".into(), "bridge".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME          DRIVER\napp           overlay\nlonger-name   bridge\n"
        );
    }
}
