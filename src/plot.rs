//! `vic plot`: a run's metrics.csv as a PNG picture. The training bound, the test ELBO and,
//! where the model has one, the exact test log p(x) against the step, with the phases of
//! `schedule = alternate(...)` shaded (E: guide parameters, M: model parameters).
//!
//! Drawn with `plotters` on its bitmap backend into memory; text uses DejaVu Sans from the
//! `dejavu` crate, registered with plotters' `ab_glyph` font support, so no system font or
//! fontconfig is needed. No I/O here: the caller reads the run and writes the PNG.

use crate::ir::Schedule;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// One named curve: `(step, value)` points.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The curves of a metrics.csv text, in the order drawn: `train_bound` ("train bound"),
/// `test_elbo` ("test ELBO") and `test_log_px` ("test log p(x), exact") when present.
/// Empty cells and non-finite values are skipped.
pub fn curves(metrics_csv: &str) -> Result<Vec<Curve>, String> {
    let mut reader = csv::Reader::from_reader(metrics_csv.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("metrics.csv: {e}"))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let Some(step) = col("step") else {
        return Err("metrics.csv has no `step` column".into());
    };
    let wanted = [
        ("train_bound", "train bound"),
        ("test_elbo", "test ELBO"),
        ("test_log_px", "test log p(x), exact"),
    ];
    let mut out: Vec<(usize, Curve)> = wanted
        .iter()
        .filter_map(|(c, label)| {
            col(c).map(|i| {
                (
                    i,
                    Curve {
                        name: (*label).to_string(),
                        points: Vec::new(),
                    },
                )
            })
        })
        .collect();
    for record in reader.records() {
        let record = record.map_err(|e| format!("metrics.csv: {e}"))?;
        let Some(x) = record.get(step).and_then(|s| s.parse::<f64>().ok()) else {
            continue;
        };
        for (i, curve) in out.iter_mut() {
            if let Some(y) = record.get(*i).and_then(|s| s.parse::<f64>().ok()) {
                if y.is_finite() {
                    curve.points.push((x, y));
                }
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| !c.points.is_empty())
        .collect())
}

/// `[start, end)` step ranges.
pub type Ranges = Vec<(f64, f64)>;

/// The `[start, end)` step ranges of each phase of `schedule` up to `last` step: E phases
/// first, then M phases (empty for `joint`).
pub fn phases(schedule: &Schedule, last: f64) -> (Ranges, Ranges) {
    let (mut e, mut m) = (Vec::new(), Vec::new());
    if let Schedule::Alternate { e_steps, m_steps } = schedule {
        let (es, ms) = (*e_steps as f64, *m_steps as f64);
        if es + ms <= 0.0 {
            return (e, m);
        }
        let mut start = 0.0;
        while start < last {
            e.push((start, (start + es).min(last)));
            if start + es < last {
                m.push((start + es, (start + es + ms).min(last)));
            }
            start += es + ms;
        }
    }
    (e, m)
}

const FONT: &str = "vic-sans";

fn plot_error<E: std::fmt::Debug>(e: E) -> String {
    format!("cannot draw the plot: {e:?}")
}

/// Draw `curves` (and the phases of `schedule`) as a `width` x `height` RGB PNG.
pub fn metrics_png(
    curves: &[Curve],
    schedule: &Schedule,
    title: &str,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, String> {
    let points = curves.iter().flat_map(|c| c.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (0.0f64, 1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !y0.is_finite() || !y1.is_finite() {
        return Err("metrics.csv has no values to plot".into());
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    x0 = x0.min(0.0);
    register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "cannot load the embedded font".to_string())?;

    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("nats per example")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(plot_error)?;

        let (e_phases, m_phases) = phases(schedule, x1);
        let e_color = RGBColor(200, 220, 255);
        let m_color = RGBColor(255, 225, 190);
        for (ranges, color, label) in [
            (&e_phases, e_color, "E phase (guide)"),
            (&m_phases, m_color, "M phase (model)"),
        ] {
            if ranges.is_empty() {
                continue;
            }
            chart
                .draw_series(
                    ranges
                        .iter()
                        .map(|&(a, b)| Rectangle::new([(a, y0), (b, y1)], color.filled())),
                )
                .map_err(plot_error)?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 16, y + 5)], color.filled())
                });
        }
        let colors = [RGBColor(90, 90, 90), BLUE, RED, GREEN, MAGENTA];
        for (i, c) in curves.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    c.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(c.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&rgb).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CSV: &str = "epoch,step,train_loss,train_bound,test_elbo,test_log_px,phase,\"KL(z)\",examples_per_second,seconds\n\
        1,10,5.0,-5.0,-5.5,-4.0,E,0.1,100.0,0.1\n\
        1,20,4.0,-4.0,-4.2,-4.0,E,0.1,100.0,0.1\n\
        2,30,3.0,-3.0,-3.6,-3.1,M,0.1,100.0,0.1\n\
        2,40,2.5,-2.5,-3.0,,M,0.1,100.0,0.1\n";

    #[test]
    fn curves_read_the_bound_elbo_and_log_px_columns() {
        let c = curves(CSV).unwrap();
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["train bound", "test ELBO", "test log p(x), exact"]);
        assert_eq!(
            c[1].points,
            [(10.0, -5.5), (20.0, -4.2), (30.0, -3.6), (40.0, -3.0)]
        );
        // The empty cell is skipped.
        assert_eq!(c[2].points.len(), 3);
    }

    #[test]
    fn phases_alternate_up_to_the_last_step() {
        let s = Schedule::Alternate {
            e_steps: 20,
            m_steps: 10,
        };
        let (e, m) = phases(&s, 75.0);
        assert_eq!(e, [(0.0, 20.0), (30.0, 50.0), (60.0, 75.0)]);
        assert_eq!(m, [(20.0, 30.0), (50.0, 60.0)]);
        assert_eq!(phases(&Schedule::Joint, 75.0), (vec![], vec![]));
    }

    #[test]
    fn the_png_decodes_at_its_size_with_curves_and_bands() {
        let c = curves(CSV).unwrap();
        let s = Schedule::Alternate {
            e_steps: 20,
            m_steps: 20,
        };
        let bytes = metrics_png(&c, &s, "test", 640, 400).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (640, 400));
        let px: Vec<[u8; 3]> = buf[..info.buffer_size()]
            .chunks(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        let count = |rgb: [u8; 3]| px.iter().filter(|&&p| p == rgb).count();
        // The E band, the M band, a red curve (log p(x)) and dark text/axes are all there.
        assert!(count([200, 220, 255]) > 1000, "no E band");
        assert!(count([255, 225, 190]) > 1000, "no M band");
        assert!(count([255, 0, 0]) > 50, "no log p(x) curve");
        assert!(
            px.iter().filter(|p| p.iter().all(|&v| v < 60)).count() > 500,
            "no axes or text"
        );
    }
}
