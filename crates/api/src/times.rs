//! How times are written: RFC 3339 in UTC with milliseconds in every JSON answer
//! (`2026-12-04T19:22:35.120Z`, what every client library parses), and a plainer
//! `2026-12-04 19:22:35 UTC` where a person reads them (the CLI, the dashboard).

/// A calendar date and time of day in UTC: (year, month, day, hour, minute, second, ms).
fn civil(ms: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000),
    )
}

/// Milliseconds since the epoch as RFC 3339 (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
pub fn rfc3339(ms: i64) -> String {
    let (y, m, d, hh, mm, ss, millis) = civil(ms);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (the CLI and the dashboard).
pub fn utc_time(ms: i64) -> String {
    let (y, m, d, hh, mm, ss, _) = civil(ms);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// `YYYY-MM-DDTHH:MM[:SS[.fff]][Z]` (UTC: RFC 3339 with `Z`, or a form's local-less time)
/// to unix ms.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once('T')?;
    let (time, millis) = match time.split_once('.') {
        Some((t, frac))
            if (1..=3).contains(&frac.len()) && frac.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (t, format!("{frac:0<3}").parse::<i64>().ok()?)
        }
        Some(_) => return None,
        None => (time, 0),
    };
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm) = (t.next()??, t.next()??);
    let ss = t.next().flatten().unwrap_or(0);
    // Years 1 to 9999 only: the arithmetic below cannot overflow on what a form can send.
    if !(1..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hh)
        || !(0..=59).contains(&mm)
        || !(0..=59).contains(&ss)
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1000 + millis)
}

/// In a JSON value (a journal event), every number under a key ending in `_at` written as
/// RFC 3339.
pub(crate) fn times_as_text(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v.as_i64() {
                    Some(ms) if key.ends_with("_at") => *v = rfc3339(ms).into(),
                    _ => times_as_text(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(times_as_text),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_413_352_050), "2026-12-04T19:42:32.050Z");
        assert_eq!(rfc3339(951_782_400_999), "2000-02-29T00:00:00.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(utc_time(1_796_413_352_050), "2026-12-04 19:42:32 UTC");
        for ms in [0, 1_796_413_352_050, 951_782_400_999] {
            assert_eq!(parse_utc(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            parse_utc("2026-12-04T19:42:32.05Z"),
            Some(1_796_413_352_050)
        );
        assert_eq!(parse_utc("2026-12-04T19:42:32.0500Z"), None);
        let mut event = serde_json::json!({"type": "retry_scheduled", "retry_at": 0, "attempt": 2, "inner": [{"timeout_at": 1000}]});
        times_as_text(&mut event);
        assert_eq!(
            event,
            serde_json::json!({"type": "retry_scheduled", "retry_at": "1970-01-01T00:00:00.000Z", "attempt": 2, "inner": [{"timeout_at": "1970-01-01T00:00:01.000Z"}]})
        );
    }
}
