#include "sightline/host/console.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <iostream>

#include <sightline/error.hpp>

namespace fs = std::filesystem;

namespace sightline::host {

ProgressBar::ProgressBar(std::string label, std::size_t total)
    : label_(std::move(label)), total_(total), tty_(::isatty(STDERR_FILENO) != 0), start_(Clock::now()) {}

void ProgressBar::update(std::size_t done) {
    std::lock_guard lock(mutex_);
    if (drawn_ == Clock::time_point::max()) return;  // the final line is printed once
    auto now = Clock::now();
    bool last = done >= total_;
    if (tty_) {
        if (!last && now - drawn_ < std::chrono::milliseconds(100)) return;
    } else {
        std::size_t decile = total_ ? done * 10 / total_ : 10;
        if (!last && (decile == decile_ || now - drawn_ < std::chrono::seconds(5))) return;
        decile_ = decile;
    }
    drawn_ = last ? Clock::time_point::max() : now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    double eta = rate > 0 ? static_cast<double>(total_ - std::min(done, total_)) / rate : 0;
    const int width = 30;
    int filled = total_ ? static_cast<int>(width * std::min(done, total_) / total_) : width;
    char line[512];
    std::snprintf(line, sizeof line, "%s [%s%s] %zu/%zu  %.1f/s  %s %.0fs", label_.c_str(),
                  std::string(static_cast<std::size_t>(filled), '#').c_str(),
                  std::string(static_cast<std::size_t>(width - filled), '.').c_str(), done, total_, rate,
                  last ? "took" : "eta", last ? secs : eta);
    std::cerr << (tty_ ? "\r\033[K" : "") << line << (tty_ && !last ? "" : "\n") << std::flush;
}

bool is_image_file(const fs::path& p) {
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp" || ext == ".bmp";
}

Bytes read_file(const fs::path& p, std::uint64_t max_bytes) {
    std::error_code ec;
    auto size = fs::file_size(p, ec);
    if (ec) throw Error(ErrorCode::not_found, "cannot read " + p.string() + ": " + ec.message());
    if (size > max_bytes)
        throw Error(ErrorCode::resource_exhausted, p.string() + " is " + std::to_string(size) +
                                                       " bytes, more than the " + std::to_string(max_bytes) +
                                                       " allowed");
    std::ifstream in(p, std::ios::binary);
    if (!in) throw Error(ErrorCode::not_found, "cannot read " + p.string());
    Bytes out(size);
    in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(size));
    if (static_cast<std::uint64_t>(in.gcount()) != size) throw Error(ErrorCode::data_loss, "short read of " + p.string());
    return out;
}

}  // namespace sightline::host
