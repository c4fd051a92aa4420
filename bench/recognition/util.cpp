#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>

#include "bench.hpp"

namespace sightline::bench {

Progress::Progress(std::string label, std::size_t total)
    : label_(std::move(label)), total_(total), tty_(::isatty(STDERR_FILENO) != 0), start_(Clock::now()) {}

void Progress::update(std::size_t done) {
    std::lock_guard lock(mutex_);
    if (drawn_ == Clock::time_point::max()) return;  // the final line is printed once
    auto now = Clock::now();
    bool last = done >= total_;
    if (tty_) {
        if (!last && now - drawn_ < std::chrono::milliseconds(100)) return;
    } else {
        // Logs and CI: a line per 10% at most, and none closer than 5 s, plus the final one.
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

void note(const std::string& line) { std::cerr << "bench: " << line << "\n" << std::flush; }

Bytes read_file(const fs::path& p, std::uint64_t max_bytes) {
    std::error_code ec;
    auto size = fs::file_size(p, ec);
    if (ec) throw std::runtime_error("cannot read " + p.string() + ": " + ec.message());
    if (size > max_bytes)
        throw std::runtime_error(p.string() + " is " + std::to_string(size) + " bytes, more than the " +
                                 std::to_string(max_bytes) + " this bench reads");
    std::ifstream in(p, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + p.string());
    Bytes out(size);
    in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(size));
    if (static_cast<std::uint64_t>(in.gcount()) != size) throw std::runtime_error("short read of " + p.string());
    return out;
}

static std::string lower_ext(const fs::path& p) {
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return ext;
}

bool is_image_file(const fs::path& p) {
    std::string ext = lower_ext(p);
    return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp" || ext == ".bmp";
}

std::string content_type_for(const fs::path& p) {
    std::string ext = lower_ext(p);
    if (ext == ".png") return "image/png";
    if (ext == ".webp") return "image/webp";
    if (ext == ".bmp") return "image/bmp";
    return "image/jpeg";
}

std::optional<std::uint64_t> vm_hwm_bytes(long pid) {
    std::ifstream in(pid ? "/proc/" + std::to_string(pid) + "/status" : std::string("/proc/self/status"));
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmHWM:", 0) != 0) continue;
        std::uint64_t kb = 0;
        if (std::sscanf(line.c_str() + 6, "%lu", &kb) == 1) return kb * 1024;
    }
    return std::nullopt;
}

fs::path exe_dir() {
    std::error_code ec;
    fs::path p = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return fs::current_path();
    return p.parent_path();
}

fs::path make_temp_dir(const std::string& prefix) {
    std::random_device rd;
    for (int attempt = 0; attempt < 100; ++attempt) {
        char name[64];
        std::snprintf(name, sizeof name, "%s-%d-%08x", prefix.c_str(), static_cast<int>(::getpid()), rd());
        fs::path p = fs::temp_directory_path() / name;
        std::error_code ec;
        if (fs::create_directory(p, ec)) return p;
    }
    throw std::runtime_error("cannot create a temporary directory under " + fs::temp_directory_path().string());
}

}  // namespace sightline::bench
