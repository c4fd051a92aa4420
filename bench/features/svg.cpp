// The matching-score plot as plain SVG text, so the bench needs no plotting library and the file
// diffs sensibly when it is regenerated.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "features_bench.hpp"

namespace sightline::bench {

namespace {

constexpr double kPanelW = 380, kPanelH = 270;
constexpr double kLeft = 50, kRight = 14, kTop = 34, kBottom = 48;  // plot area inside a panel
constexpr double kOuter = 20, kHeader = 56;
constexpr double kInset = 20;  // keeps the first and last pair off the axes
constexpr int kPairs = 5;

// Okabe–Ito colours (distinguishable with the common colour-vision deficiencies), with grey in
// place of their yellow, which vanishes on white.
constexpr const char* kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                    "#E69F00", "#56B4E9", "#000000", "#999999"};
constexpr int kColourCount = 8;
// Past eight series the colours repeat, so the line style changes with them.
constexpr const char* kDashes[] = {"", "6 3", "2 3"};

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
}

std::string xml(const std::string& s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                out += c;
        }
    }
    return out;
}

// A different marker shape per series as well as a colour, for grey-scale prints.
std::string marker(int index, double x, double y, const std::string& colour) {
    const double r = 3.5;
    const std::string fill = " fill=\"" + colour + "\"/>";
    switch (index % 4) {
        case 0:
            return "<circle cx=\"" + num(x) + "\" cy=\"" + num(y) + "\" r=\"" + num(r) + "\"" +
                   fill;
        case 1:
            return "<rect x=\"" + num(x - r) + "\" y=\"" + num(y - r) + "\" width=\"" + num(2 * r) +
                   "\" height=\"" + num(2 * r) + "\"" + fill;
        case 2:
            return "<path d=\"M" + num(x) + " " + num(y - r * 1.2) + " L" + num(x + r * 1.1) + " " +
                   num(y + r * 0.8) + " L" + num(x - r * 1.1) + " " + num(y + r * 0.8) + " Z\"" +
                   fill;
        default:
            return "<path d=\"M" + num(x) + " " + num(y - r * 1.3) + " L" + num(x + r * 1.1) + " " +
                   num(y) + " L" + num(x) + " " + num(y + r * 1.3) + " L" + num(x - r * 1.1) + " " +
                   num(y) + " Z\"" + fill;
    }
}

std::string stroke_style(int index) {
    std::string s = " stroke=\"" + std::string(kColours[index % kColourCount]) +
                    "\" stroke-width=\"2\" fill=\"none\"";
    const char* dash = kDashes[(index / kColourCount) % 3];
    if (*dash) s += " stroke-dasharray=\"" + std::string(dash) + "\"";
    return s;
}

// Rough width of a label in the 12 px sans-serif used, to lay the legend out without a font.
double text_width(const std::string& s) {
    std::size_t chars = 0;
    for (unsigned char c : s) chars += (c & 0xC0) != 0x80 ? 1 : 0;  // UTF-8 code points
    return 7.0 * static_cast<double>(chars);
}

}  // namespace

std::string matching_score_svg(const std::vector<std::string>& sequences,
                               const std::vector<PlotSeries>& series, const std::string& subtitle) {
    const int n = static_cast<int>(sequences.size());
    const int cols = std::max(1, std::min(n, 2));
    const int rows = std::max(1, (n + cols - 1) / cols);
    const double width = 2 * kOuter + cols * kPanelW;

    // Legend rows, wrapped to the figure's width.
    struct Entry {
        int index;
        double x, y;
        std::string text;
    };
    std::vector<Entry> legend;
    const double entry_gap = 26, line_len = 28, row_h = 20;
    double lx = kOuter, ly = kHeader + rows * kPanelH + 16;
    for (std::size_t i = 0; i < series.size(); ++i) {
        std::string text = series[i].label + (series[i].values.empty() ? " (not run)" : "");
        const double w = line_len + 6 + text_width(text);
        if (lx > kOuter && lx + w > width - kOuter) {
            lx = kOuter;
            ly += row_h;
        }
        legend.push_back({static_cast<int>(i), lx, ly, std::move(text)});
        lx += w + entry_gap;
    }
    const double height = ly + row_h + kOuter / 2;

    std::ostringstream o;
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width) << "\" height=\""
      << num(height) << "\" viewBox=\"0 0 " << num(width) << " " << num(height)
      << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
    o << "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
    o << "<text x=\"" << num(kOuter) << "\" y=\"24\" font-size=\"16\" font-weight=\"bold\">"
      << "Matching score on the Oxford affine sequences</text>\n";
    o << "<text x=\"" << num(kOuter) << "\" y=\"42\" fill=\"#555555\">" << xml(subtitle)
      << "</text>\n";

    for (int s = 0; s < n; ++s) {
        const double px = kOuter + (s % cols) * kPanelW, py = kHeader + (s / cols) * kPanelH;
        const double x0 = px + kLeft, x1 = px + kPanelW - kRight;
        const double y0 = py + kTop, y1 = py + kPanelH - kBottom;
        auto xpos = [&](int pair) {
            return x0 + kInset + pair * (x1 - x0 - 2 * kInset) / (kPairs - 1);
        };
        auto ypos = [&](double v) { return y1 - std::clamp(v, 0.0, 1.0) * (y1 - y0); };
        const SequenceInfo info = sequence_info(sequences[static_cast<std::size_t>(s)]);

        o << "<g>\n";
        o << "<text x=\"" << num(x0) << "\" y=\"" << num(py + 22)
          << "\"><tspan font-weight=\"bold\">" << xml(sequences[static_cast<std::size_t>(s)])
          << "</tspan>";
        if (!info.change.empty())
            o << "<tspan dx=\"6\" fill=\"#555555\">· " << xml(info.change) << "</tspan>";
        o << "</text>\n";
        for (int t = 0; t <= 5; ++t) {
            const double v = t / 5.0, y = ypos(v);
            o << "<line x1=\"" << num(x0) << "\" y1=\"" << num(y) << "\" x2=\"" << num(x1)
              << "\" y2=\"" << num(y) << "\" stroke=\"" << (t == 0 ? "#888888" : "#e3e3e3")
              << "\"/>\n";
            o << "<text x=\"" << num(x0 - 6) << "\" y=\"" << num(y + 4)
              << "\" text-anchor=\"end\" fill=\"#555555\">" << num(v) << "</text>\n";
        }
        o << "<line x1=\"" << num(x0) << "\" y1=\"" << num(y0) << "\" x2=\"" << num(x0)
          << "\" y2=\"" << num(y1) << "\" stroke=\"#888888\"/>\n";
        o << "<text transform=\"translate(" << num(px + 14) << " " << num((y0 + y1) / 2)
          << ") rotate(-90)\" text-anchor=\"middle\" fill=\"#555555\">matching score</text>\n";
        for (int p = 0; p < kPairs; ++p) {
            const double x = xpos(p);
            o << "<text x=\"" << num(x) << "\" y=\"" << num(y1 + 16)
              << "\" text-anchor=\"middle\">1-" << p + 2 << "</text>\n";
            if (static_cast<std::size_t>(p) < info.amounts.size())
                o << "<text x=\"" << num(x) << "\" y=\"" << num(y1 + 31)
                  << "\" text-anchor=\"middle\" font-size=\"11\" fill=\"#555555\">"
                  << xml(info.amounts[static_cast<std::size_t>(p)]) << "</text>\n";
        }

        for (std::size_t i = 0; i < series.size(); ++i) {
            if (series[i].values.size() <= static_cast<std::size_t>(s)) continue;
            const auto& v = series[i].values[static_cast<std::size_t>(s)];
            const int index = series[i].style;
            const std::size_t pairs = std::min<std::size_t>(v.size(), kPairs);
            // A missing value breaks the line rather than joining its neighbours across it.
            std::string points;
            int count = 0;
            auto flush = [&] {
                if (count >= 2)
                    o << "<polyline points=\"" << points << "\"" << stroke_style(index) << "/>\n";
                points.clear();
                count = 0;
            };
            for (std::size_t p = 0; p < pairs; ++p) {
                if (std::isnan(v[p])) {
                    flush();
                    continue;
                }
                // Appended piecewise: GCC 12 at -O3 flags `"" + std::string` with a false
                // -Wrestrict (GCC bug 105329), which -Werror turns into a failed build.
                if (count++) points += ' ';
                points += num(xpos(static_cast<int>(p)));
                points += ',';
                points += num(ypos(v[p]));
            }
            flush();
            for (std::size_t p = 0; p < pairs; ++p)
                if (!std::isnan(v[p]))
                    o << marker(index, xpos(static_cast<int>(p)), ypos(v[p]),
                                kColours[index % kColourCount])
                      << "\n";
        }
        o << "</g>\n";
    }

    for (const auto& e : legend) {
        const double y = e.y;
        const auto& line = series[static_cast<std::size_t>(e.index)];
        const bool ran = !line.values.empty();
        if (ran) {
            o << "<line x1=\"" << num(e.x) << "\" y1=\"" << num(y) << "\" x2=\""
              << num(e.x + line_len) << "\" y2=\"" << num(y) << "\"" << stroke_style(line.style)
              << "/>\n";
            o << marker(line.style, e.x + line_len / 2, y, kColours[line.style % kColourCount])
              << "\n";
        }
        o << "<text x=\"" << num(e.x + line_len + 6) << "\" y=\"" << num(y + 4) << "\""
          << (ran ? "" : " fill=\"#999999\"") << ">" << xml(e.text) << "</text>\n";
    }
    o << "</svg>\n";
    return o.str();
}

}  // namespace sightline::bench
