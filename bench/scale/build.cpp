// Growing the gallery: distractor images are made and their features extracted on a pool of
// threads; the records go into the pipeline with Pipeline::add_record from one thread, in plan
// order, so that two runs with the same arguments build the same index (or, with parallel_add,
// from the workers as they are made: faster where the index's add does real work, in an order
// that varies from run to run).
#include <opencv2/imgcodecs.hpp>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "scale.hpp"
#include "sightline/host/feature_record.hpp"
#include "sightline/host/pipeline.hpp"
#include "sightline/serialize.hpp"

namespace sightline::bench {

namespace {

struct Task {
    std::int64_t true_item = -1;        // a true item (read from its file), or
    std::uint32_t source = 0;           // a distractor source and
    std::vector<std::size_t> items;     // the distractors cut from it in this increment
};

struct Slot {
    bool ready = false;
    std::vector<std::pair<host::FeatureRecord, std::string>> records;  // record, metadata; not yet added
    std::vector<std::string> failures;
    std::size_t failed = 0;
    std::size_t added = 0;       // added by the worker already (parallel add)
    double add_seconds = 0;
};

double add_all(host::Pipeline& pipeline, Slot& slot) {
    double seconds = 0;
    for (auto& [record, metadata] : slot.records) {
        const auto a = Clock::now();
        pipeline.add_record(record, std::move(metadata));
        seconds += std::chrono::duration<double>(Clock::now() - a).count();
        ++slot.added;
    }
    slot.records.clear();
    return seconds;
}

void remember(const fs::path& dir, const host::FeatureRecord& r) {
    if (dir.empty()) return;
    const fs::path file = dir / (r.item_id + ".slfr");
    const fs::path temp = dir / (r.item_id + ".slfr.tmp");
    const Bytes bytes = host::encode_record(r);
    {
        std::ofstream out(temp, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        if (!out) throw std::runtime_error("cannot write " + temp.string());
    }
    fs::rename(temp, file);  // a run killed mid-write leaves no half entry
}

void run_task(const host::Pipeline& pipeline, const Plan& plan, const Task& task, Slot& slot, const fs::path& save_dir,
              const fs::path& cache) {
    const std::string& signature = pipeline.signature();
    if (task.true_item >= 0) {
        const TrueItem& t = plan.true_items[static_cast<std::size_t>(task.true_item)];
        try {
            if (auto r = read_record(cache, t.id, signature)) {
                slot.records.emplace_back(std::move(*r), t.metadata);
                return;
            }
            Bytes bytes = read_file(t.file, kMaxImageBytes);
            slot.records.emplace_back(pipeline.extract_item(t.id, std::span<const std::uint8_t>(bytes)), t.metadata);
            remember(cache, slot.records.back().first);
        } catch (const std::exception& e) {
            ++slot.failed;
            slot.failures.push_back(t.id + ": " + e.what());
        }
        return;
    }
    // Decode the source only when some of its distractors are not in the cache.
    std::vector<std::size_t> missing;
    for (std::size_t i : task.items) {
        const std::string id = plan.distractor_id(i);
        if (save_dir.empty())
            if (auto r = read_record(cache, id, signature)) {
                slot.records.emplace_back(std::move(*r), "{}");
                continue;
            }
        missing.push_back(i);
    }
    if (missing.empty()) return;
    cv::Mat source;
    try {
        source = decode_source(plan.sources[task.source].file);
    } catch (const std::exception& e) {
        slot.failed += missing.size();
        slot.failures.push_back(plan.sources[task.source].file.string() + ": " + e.what());
        return;
    }
    const int gallery_size = pipeline.settings().gallery_size;
    for (std::size_t i : missing) {
        const std::string id = plan.distractor_id(i);
        try {
            cv::Mat img = distractor_image(plan.distractors[i], source, gallery_size);
            if (!save_dir.empty() && !cv::imwrite((save_dir / (id + ".png")).string(), img))
                throw std::runtime_error("cannot write " + (save_dir / (id + ".png")).string());
            slot.records.emplace_back(pipeline.extract_item(id, img), "{}");
            remember(cache, slot.records.back().first);
        } catch (const std::exception& e) {
            ++slot.failed;
            slot.failures.push_back(id + ": " + e.what());
        }
    }
}

}  // namespace

std::optional<host::FeatureRecord> read_record(const fs::path& dir, const std::string& id,
                                               const std::string& signature) {
    if (dir.empty()) return std::nullopt;
    const fs::path file = dir / (id + ".slfr");
    std::error_code ec;
    if (!fs::exists(file, ec)) return std::nullopt;
    try {
        host::FeatureRecord r =
            host::decode_record(read_file(file, std::size_t{1} << 30), file.string());
        if (r.signature == signature && r.item_id == id) return r;
    } catch (const std::exception&) {
        // A damaged entry counts as none: the build makes it again.
    }
    return std::nullopt;
}

fs::path records_dir(const host::Pipeline& pipeline, const Plan& plan,
                     const fs::path& features_cache) {
    // One subdirectory per extractor signature, gallery size, seed and image set: an id names the
    // same image only under all four, so records made by other settings are never mixed in.
    fs::path cache;
    if (!features_cache.empty()) {
        std::string key = pipeline.signature() + "\ngallery_size=" + std::to_string(pipeline.settings().gallery_size) +
                          "\nseed=" + std::to_string(plan.seed);
        for (const auto& d : plan.true_dirs) key += "\ntrue=" + d;
        for (const auto& d : plan.distractor_dirs) key += "\ndistractors=" + d;
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx",
                      static_cast<unsigned long long>(sightline::fnv1a64(key.data(), key.size())));
        cache = features_cache / hex;
        fs::create_directories(cache);
        std::ofstream(cache / "KEY") << key << "\n";
    }
    return cache;
}

BuildStats build_increment(host::Pipeline& pipeline, const Plan& plan, bool add_true,
                           std::size_t from, std::size_t to, std::size_t threads, bool parallel_add,
                           const fs::path& save_dir, const fs::path& cache) {
    if (!save_dir.empty()) fs::create_directories(save_dir);
    BuildStats st;
    std::vector<Task> tasks;
    if (add_true)
        for (std::size_t i = 0; i < plan.true_items.size(); ++i) tasks.push_back({static_cast<std::int64_t>(i), 0, {}});
    // One task per source: it is decoded once for all its distractors in this increment.
    std::unordered_map<std::uint32_t, std::size_t> task_of;
    for (std::size_t i = from; i < to; ++i) {
        const std::uint32_t s = plan.distractors[i].source;
        auto [it, fresh] = task_of.try_emplace(s, tasks.size());
        if (fresh) tasks.push_back({-1, s, {}});
        tasks[it->second].items.push_back(i);
    }
    const std::size_t total = (add_true ? plan.true_items.size() : 0) + (to - from);
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    const std::size_t window = 4 * threads;  // tasks made ahead of the one being added

    std::vector<Slot> slots(tasks.size());
    std::mutex m;
    std::condition_variable ready_cv, room_cv;
    std::size_t next = 0, consumed = 0;
    bool stop = false;
    auto worker = [&] {
        for (;;) {
            std::size_t i;
            {
                std::unique_lock lock(m);
                room_cv.wait(lock, [&] { return stop || next >= tasks.size() || next < consumed + window; });
                if (stop || next >= tasks.size()) return;
                i = next++;
            }
            Slot slot;
            run_task(pipeline, plan, tasks[i], slot, save_dir, cache);
            if (parallel_add) slot.add_seconds = add_all(pipeline, slot);
            slot.ready = true;
            {
                std::lock_guard lock(m);
                slots[i] = std::move(slot);
            }
            ready_cv.notify_all();
        }
    };

    Progress bar("building " + std::to_string(pipeline.size() + total) + " items (+" + std::to_string(total) + ")",
                 total);
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    std::size_t done = 0;
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        Slot slot;
        {
            std::unique_lock lock(m);
            while (!slots[i].ready && !g_stop.load()) ready_cv.wait_for(lock, std::chrono::milliseconds(200));
            if (!slots[i].ready) break;
            slot = std::move(slots[i]);
            slots[i] = Slot{};
        }
        st.add_record_seconds += slot.add_seconds + add_all(pipeline, slot);
        st.added += slot.added;
        st.failed += slot.failed;
        for (auto& f : slot.failures)
            if (st.failures.size() < 10) st.failures.push_back(std::move(f));
        done += slot.added + slot.failed;
        bar.update(done);
        {
            std::lock_guard lock(m);
            consumed = i + 1;
        }
        room_cv.notify_all();
        if (g_stop.load()) break;
    }
    {
        std::lock_guard lock(m);
        stop = true;
    }
    room_cv.notify_all();
    for (auto& t : pool) t.join();
    st.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    st.interrupted = done < total;
    return st;
}

void write_gallery_tsv(const fs::path& dir, const Plan& plan, std::size_t items) {
    fs::create_directories(dir);
    std::ofstream out(dir / "gallery.tsv");
    out << "id\tkind\tsource\tcrop_x\tcrop_y\tcrop_w\tcrop_h\tmirrored\n";
    std::size_t n = 0;
    for (const auto& t : plan.true_items) {
        if (n++ >= items) break;
        out << t.id << "\ttrue\t" << t.file.string() << "\t\t\t\t\t\n";
    }
    for (std::size_t i = 0; i < plan.distractors.size() && n < items; ++i, ++n) {
        const Distractor& d = plan.distractors[i];
        const Source& s = plan.sources[d.source];
        out << plan.distractor_id(i) << "\t" << (d.crop < 0 ? "whole" : "crop") << "\t" << s.file.string();
        if (d.crop < 0) {
            out << "\t\t\t\t\t\n";
            continue;
        }
        out << "\t" << std::lround(d.rect.x * s.size.width) << "\t" << std::lround(d.rect.y * s.size.height) << "\t"
            << std::lround(d.rect.width * s.size.width) << "\t" << std::lround(d.rect.height * s.size.height) << "\t"
            << (d.mirrored ? 1 : 0) << "\n";
    }
    if (!out) throw std::runtime_error("cannot write " + (dir / "gallery.tsv").string());
}

}  // namespace sightline::bench
