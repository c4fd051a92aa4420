#include "sightline/host/pipeline.hpp"

#include <opencv2/calib3d.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <cmath>
#include <future>
#include <numeric>

#include "sightline/host/worker_pool.hpp"

#include <sightline/hamming.hpp>

namespace sightline::host {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

const char* const kStages[5] = {"decode", "extract", "search", "verify", "total"};

void check_deadline(const Request& r, const char* stage) {
    if (Clock::now() > r.deadline)
        throw Error(ErrorCode::deadline_exceeded, std::string("the request ran out of time before ") + stage);
}

double side(const cv::Point2f& a, const cv::Point2f& b) { return std::hypot(a.x - b.x, a.y - b.y); }

std::optional<double> client_number(const Request& r, const char* key) {
    auto it = r.client_fields.find(key);
    if (it == r.client_fields.end()) return std::nullopt;
    try {
        std::size_t used = 0;
        double v = std::stod(it->second, &used);
        if (used != it->second.size() || !std::isfinite(v)) throw std::invalid_argument("x");
        return v;
    } catch (...) {
        throw Error(ErrorCode::invalid_argument, std::string("client field ") + key + " must be a number, found '" +
                                                     it->second + "'");
    }
}

// The n features with the highest detector response, or all of them.
Features strongest(const Features& f, std::size_t n) {
    if (n == 0 || f.keypoints.size() <= n) return f;
    std::vector<int> order(f.keypoints.size());
    std::iota(order.begin(), order.end(), 0);
    std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(), [&](int a, int b) {
        return f.keypoints[static_cast<std::size_t>(a)].response > f.keypoints[static_cast<std::size_t>(b)].response;
    });
    Features out;
    out.keypoints.reserve(n);
    out.descriptors.create(static_cast<int>(n), f.descriptors.cols, f.descriptors.type());
    for (std::size_t i = 0; i < n; ++i) {
        out.keypoints.push_back(f.keypoints[static_cast<std::size_t>(order[i])]);
        f.descriptors.row(order[i]).copyTo(out.descriptors.row(static_cast<int>(i)));
    }
    return out;
}

}  // namespace

Pipeline::Pipeline(std::string name, std::shared_ptr<FeatureExtractor> extractor,
                   std::shared_ptr<FeatureExtractor> query_extractor, std::shared_ptr<Index> index,
                   PipelineSettings settings, std::shared_ptr<spdlog::logger> logger, MetricsRegistry* metrics)
    : name_(std::move(name)),
      extractor_(std::move(extractor)),
      query_extractor_(query_extractor ? std::move(query_extractor) : extractor_),
      index_(std::move(index)),
      settings_(settings),
      log_(std::move(logger)),
      signature_(extractor_->signature() + ";gallery_size=" + std::to_string(settings.gallery_size) +
                 (settings.clahe_clip > 0 ? ";clahe=" + std::to_string(settings.clahe_clip) : std::string())) {
    if (metrics) {
        const std::vector<double> buckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
        for (int i = 0; i < 5; ++i)
            stage_hist_[i] = &metrics->histogram("stage_seconds", "time spent per pipeline stage", buckets,
                                                 {{"pipeline", name_}, {"stage", kStages[i]}});
        recognitions_ = &metrics->counter("recognitions_total", "recognition requests", {{"pipeline", name_}});
        matched_ = &metrics->counter("recognitions_matched_total", "recognitions with at least one match",
                                     {{"pipeline", name_}});
    }
}

void Pipeline::normalise(cv::Mat& gray) const {
    if (settings_.clahe_clip <= 0) return;
    // Tiles of about 100 px, whatever the working size, so the equalisation is equally local.
    const int tiles = std::max(2, std::max(gray.cols, gray.rows) / 100);
    auto clahe = cv::createCLAHE(settings_.clahe_clip, cv::Size(tiles, tiles));
    cv::Mat out;
    clahe->apply(gray, out);
    gray = out;
}

FeatureRecord Pipeline::extract_item(const std::string& id, std::span<const std::uint8_t> image) const {
    DecodedImage decoded = decode_gray(image, settings_.limits, settings_.gallery_size);
    cv::Mat work;
    resize_to_working(decoded.gray, work, settings_.gallery_size);
    normalise(work);
    FeatureRecord rec;
    rec.signature = signature_;
    rec.item_id = id;
    rec.image_size = work.size();
    rec.features = extractor_->extract(work);
    if (rec.features.keypoints.size() != static_cast<std::size_t>(rec.features.descriptors.rows) &&
        !rec.features.descriptors.empty())
        throw Error(ErrorCode::internal, "the extractor returned " + std::to_string(rec.features.keypoints.size()) +
                                             " keypoints but " + std::to_string(rec.features.descriptors.rows) +
                                             " descriptors");
    return rec;
}

Pipeline::RecordState Pipeline::ensure_indexed(Gallery& gallery, const std::string& id) {
    RecordState state = RecordState::computed;
    std::optional<FeatureRecord> rec;
    if (auto bytes = gallery.record(signature_, id)) {
        try {
            auto r = decode_record(*bytes, gallery.record_key(signature_, id));
            if (r.signature == signature_ && r.item_id == id) {
                rec = std::move(r);
                state = RecordState::loaded;
            } else {
                log_->info("{}: made under another signature; recomputing", gallery.record_key(signature_, id));
            }
        } catch (const std::exception& e) {
            log_->warn("{}; recomputing it", e.what());
            state = RecordState::damaged_recomputed;
        }
    }
    if (!rec) {
        auto image = gallery.image(id);
        if (!image) throw Error(ErrorCode::not_found, "gallery item '" + id + "' has no image");
        rec = extract_item(id, *image);
        auto bytes = encode_record(*rec);
        gallery.put_record(signature_, id, bytes);
    }
    std::string metadata = gallery.metadata(id);
    index_->add(id, rec->features);
    auto info = std::make_shared<ItemInfo>(ItemInfo{rec->image_size, std::move(metadata), {}, {}});
    if (settings_.verify.rematch) {
        info->descriptors = rec->features.descriptors;
        info->points.reserve(rec->features.keypoints.size());
        for (const auto& k : rec->features.keypoints) info->points.push_back(k.pt);
    }
    std::unique_lock lock(items_mutex_);
    items_[id] = std::move(info);
    return state;
}

Pipeline::LoadStats Pipeline::load(Gallery& gallery, WorkerPool* pool, const Progress& progress) {
    auto ids = gallery.ids();
    LoadStats stats;
    std::size_t done = 0;
    auto account = [&](const std::string& id, std::function<RecordState()> get) {
        try {
            switch (get()) {
                case RecordState::loaded: ++stats.loaded; break;
                case RecordState::computed: ++stats.computed; break;
                case RecordState::damaged_recomputed: ++stats.damaged; ++stats.computed; break;
            }
        } catch (const std::exception& e) {
            ++stats.failed;
            log_->error("gallery item '{}' could not be indexed: {}", id, e.what());
        }
        ++done;
        if (progress) progress(done, ids.size());
    };
    if (!pool) {
        for (const auto& id : ids) account(id, [&] { return ensure_indexed(gallery, id); });
    } else {
        std::vector<std::future<RecordState>> futures;
        futures.reserve(ids.size());
        for (const auto& id : ids) futures.push_back(pool->submit([this, &gallery, id] { return ensure_indexed(gallery, id); }));
        for (std::size_t i = 0; i < ids.size(); ++i) account(ids[i], [&] { return futures[i].get(); });
    }
    log_->info("pipeline {}: {} items ({} from stored records, {} computed, {} damaged records, {} failed)", name_,
               index_->size(), stats.loaded, stats.computed, stats.damaged, stats.failed);
    return stats;
}

void Pipeline::add(Gallery& gallery, const std::string& id) { ensure_indexed(gallery, id); }

bool Pipeline::remove(const std::string& id) {
    bool removed = index_->remove(id);
    std::unique_lock lock(items_mutex_);
    items_.erase(id);
    return removed;
}

std::vector<Correspondence> Pipeline::rematch(const Features& query, const ItemInfo& item) const {
    std::vector<Correspondence> out;
    if (query.descriptors.empty() || item.descriptors.rows < 2 || query.descriptors.type() != item.descriptors.type() ||
        query.descriptors.cols != item.descriptors.cols)
        return out;
    cv::Mat dist, idx;  // per query row: the two nearest item rows and their distances
    if (item.descriptors.type() == CV_8U && item.descriptors.cols % 8 == 0 && query.descriptors.isContinuous() &&
        item.descriptors.isContinuous()) {
        hamming_top2(query.descriptors, item.descriptors, dist, idx);
    } else {
        const bool binary = item.descriptors.type() == CV_8U;
        cv::Mat d;
        cv::batchDistance(query.descriptors, item.descriptors, d, binary ? CV_32S : CV_32F, idx,
                          binary ? cv::NORM_HAMMING : cv::NORM_L2, 2);
        d.convertTo(dist, CV_32F);
    }
    const float ratio = static_cast<float>(settings_.verify.rematch_ratio);
    // One query keypoint per gallery keypoint: the closest wins (a repeated texture otherwise
    // piles many query points onto one reference point and fakes inliers).
    std::vector<int> best_for(static_cast<std::size_t>(item.descriptors.rows), -1);
    std::vector<float> best_dist(static_cast<std::size_t>(item.descriptors.rows), 0);
    for (int r = 0; r < dist.rows; ++r) {
        const float d1 = dist.at<float>(r, 0), d2 = dist.at<float>(r, 1);
        const int nearest = idx.at<int>(r, 0);
        if (nearest < 0 || idx.at<int>(r, 1) < 0 || d1 >= ratio * d2) continue;
        auto t = static_cast<std::size_t>(nearest);
        if (best_for[t] < 0 || d1 < best_dist[t]) {
            best_for[t] = r;
            best_dist[t] = d1;
        }
    }
    for (std::size_t t = 0; t < best_for.size(); ++t)
        if (best_for[t] >= 0)
            out.push_back({query.keypoints[static_cast<std::size_t>(best_for[t])].pt, item.points[t], best_dist[t]});
    return out;
}

std::optional<Match> Pipeline::verify(const Candidate& candidate, const Features& query, const cv::Size& query_size,
                                      double to_original) const {
    const auto& v = settings_.verify;
    const Candidate* cp = &candidate;
    auto reject = [&](const char* why) -> std::optional<Match> {
        log_->debug("candidate {} ({} correspondences) rejected: {}", cp->id, cp->correspondences.size(), why);
        return std::nullopt;
    };
    std::shared_ptr<const ItemInfo> item;  // shared: verification copies no reference data
    {
        std::shared_lock lock(items_mutex_);
        auto it = items_.find(candidate.id);
        if (it == items_.end()) return reject("removed meanwhile");
        item = it->second;
    }
    const ItemInfo& info = *item;
    Candidate rematched;
    if (v.rematch && !info.descriptors.empty()) {
        rematched.id = candidate.id;
        rematched.score = candidate.score;
        rematched.correspondences = rematch(query, info);
        cp = &rematched;
    }
    const Candidate& c = *cp;
    if (c.correspondences.size() < static_cast<std::size_t>(std::max(4, v.min_inliers)))
        return reject("fewer correspondences than min_inliers");
    std::vector<cv::Point2f> src, dst;
    src.reserve(c.correspondences.size());
    dst.reserve(c.correspondences.size());
    for (const auto& m : c.correspondences) {
        src.push_back(m.gallery);
        dst.push_back(m.query);
    }
    std::vector<unsigned char> mask;
    cv::Mat H = cv::findHomography(src, dst, cv::RANSAC, v.reprojection_error, mask, 2000, 0.995);
    if (H.empty()) return reject("no homography");
    // RANSAC's model comes from 4 points; refit on all inliers (least squares + Levenberg-Marquardt)
    // and re-collect them, so the outline is as good as every inlier makes it.
    for (int round = 0; round < 3; ++round) {
        std::vector<cv::Point2f> s_in, d_in;
        for (std::size_t i = 0; i < mask.size(); ++i)
            if (mask[i]) {
                s_in.push_back(src[i]);
                d_in.push_back(dst[i]);
            }
        if (s_in.size() < 8) break;
        cv::Mat refined = cv::findHomography(s_in, d_in, 0);
        if (refined.empty()) break;
        std::vector<cv::Point2f> projected;
        cv::perspectiveTransform(src, projected, refined);
        std::vector<unsigned char> refined_mask(src.size());
        for (std::size_t i = 0; i < src.size(); ++i)
            refined_mask[i] = cv::norm(projected[i] - dst[i]) <= v.reprojection_error ? 1 : 0;
        if (cv::countNonZero(refined_mask) < cv::countNonZero(mask)) break;
        const bool same = refined_mask == mask;
        H = refined;
        mask = std::move(refined_mask);
        if (same) break;
    }
    int inliers = cv::countNonZero(mask);
    double ratio = static_cast<double>(inliers) / static_cast<double>(c.correspondences.size());
    if (inliers < v.min_inliers || ratio < v.min_inlier_ratio) {
        log_->debug("candidate {}: {} inliers of {} correspondences", c.id, inliers, c.correspondences.size());
        return reject("too few inliers");
    }

    // Reject homographies that no photo of a flat object could produce.
    const float w = static_cast<float>(info.size.width), h = static_cast<float>(info.size.height);
    std::vector<cv::Point2f> ref{{0, 0}, {w, 0}, {w, h}, {0, h}}, quad;
    cv::perspectiveTransform(ref, quad, H);
    for (const auto& p : quad)
        if (!std::isfinite(p.x) || !std::isfinite(p.y)) return reject("outline at infinity");
    // A perspective image of a plane stays on one side of the horizon: all denominators positive.
    for (const auto& p : ref) {
        double den = H.at<double>(2, 0) * p.x + H.at<double>(2, 1) * p.y + H.at<double>(2, 2);
        if (den <= 0) return reject("outline crosses the horizon");
    }
    if (!cv::isContourConvex(quad)) return reject("outline not convex");  // also self-crossing ones
    const double area = std::abs(cv::contourArea(quad));
    const double query_area = static_cast<double>(query_size.area());
    if (area < v.min_area * query_area) return reject("outline too small");
    const double scale = std::sqrt(area / (static_cast<double>(w) * h));
    if (scale > v.max_scale_change || scale < 1.0 / v.max_scale_change) return reject("scale change too large");
    const double top = side(quad[0], quad[1]), right = side(quad[1], quad[2]), bottom = side(quad[2], quad[3]),
                 left = side(quad[3], quad[0]);
    if (std::min({top, right, bottom, left}) < 1e-3) return reject("degenerate outline");
    if (std::max(top, bottom) / std::min(top, bottom) > v.max_side_ratio ||
        std::max(left, right) / std::min(left, right) > v.max_side_ratio)
        return reject("perspective too extreme");
    const double aspect = ((top + bottom) / (left + right)) / (static_cast<double>(w) / h);
    if (aspect > v.max_aspect_change || aspect < 1.0 / v.max_aspect_change) return reject("aspect change too large");

    Match m;
    m.id = c.id;
    m.inliers = inliers;
    m.score = ratio;
    for (int i = 0; i < 4; ++i) m.polygon[static_cast<std::size_t>(i)] = quad[static_cast<std::size_t>(i)] * static_cast<float>(to_original);
    m.metadata_json = info.metadata;
    return m;
}

Result Pipeline::recognize_or_throw(const Request& request) const {
    const auto t0 = Clock::now();
    Result result;
    result.request_id = request.id;
    result.variant = name_;

    auto t = Clock::now();
    DecodedImage decoded = decode_gray(request.image, settings_.limits, settings_.working_size);
    cv::Mat work;
    double resize = resize_to_working(decoded.gray, work, settings_.working_size);
    const double to_original = 1.0 / (decoded.scale * resize);
    normalise(work);
    result.timings_ms["decode"] = ms_since(t);
    check_deadline(request, "feature extraction");

    t = Clock::now();
    Features features = query_extractor_->extract(work);
    result.timings_ms["extract"] = ms_since(t);
    check_deadline(request, "search");

    t = Clock::now();
    auto candidates = index_->search(strongest(features, settings_.search_features), settings_.verify.candidates);
    result.timings_ms["search"] = ms_since(t);
    check_deadline(request, "verification");

    t = Clock::now();
    for (const auto& c : candidates)
        if (auto m = verify(c, features, work.size(), to_original)) result.matches.push_back(std::move(*m));
    std::sort(result.matches.begin(), result.matches.end(),
              [](const Match& a, const Match& b) { return a.inliers != b.inliers ? a.inliers > b.inliers : a.id < b.id; });
    auto px = client_number(request, "pos_x"), py = client_number(request, "pos_y");
    if (px && py) {
        // The object the user pointed at ranks first; the others keep their order.
        std::stable_partition(result.matches.begin(), result.matches.end(), [&](const Match& m) {
            std::vector<cv::Point2f> poly(m.polygon.begin(), m.polygon.end());
            return cv::pointPolygonTest(poly, cv::Point2f(static_cast<float>(*px), static_cast<float>(*py)), false) >= 0;
        });
    }
    if (result.matches.size() > settings_.max_matches) result.matches.resize(settings_.max_matches);
    result.timings_ms["verify"] = ms_since(t);
    result.timings_ms["total"] = ms_since(t0);
    if (stage_hist_[0])
        for (int i = 0; i < 5; ++i) stage_hist_[i]->observe(result.timings_ms[kStages[i]] / 1000.0);
    if (matched_ && !result.matches.empty()) matched_->inc();
    return result;
}

Result Pipeline::recognize(const Request& request) const {
    if (recognitions_) recognitions_->inc();
    try {
        return recognize_or_throw(request);
    } catch (const Error& e) {
        Result r;
        r.request_id = request.id;
        r.variant = name_;
        r.error = ErrorInfo{to_string(e.code()), e.what()};
        return r;
    } catch (const std::exception& e) {
        Result r;
        r.request_id = request.id;
        r.variant = name_;
        r.error = ErrorInfo{"internal", std::string("internal error: ") + e.what()};
        return r;
    }
}

}  // namespace sightline::host
