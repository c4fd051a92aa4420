#include "sightline/host/worker_pool.hpp"

#include <opencv2/core.hpp>

namespace sightline::host {

WorkerPool::WorkerPool(std::size_t workers, std::size_t queue_limit) : limit_(std::max<std::size_t>(1, queue_limit)) {
    workers = std::max<std::size_t>(1, workers);
    threads_.reserve(workers);
    for (std::size_t i = 0; i < workers; ++i) threads_.emplace_back([this] { run(); });
}

WorkerPool::~WorkerPool() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    work_.notify_all();
    room_.notify_all();
    for (auto& t : threads_) t.join();
}

std::size_t WorkerPool::queued() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
}

void WorkerPool::run() {
    while (true) {
        std::function<void()> job;
        {
            std::unique_lock lock(mutex_);
            work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping and drained: queued work is never dropped
            job = std::move(queue_.front());
            queue_.pop_front();
        }
        room_.notify_one();
        job();
    }
}

void WorkerPool::configure_opencv_threads(std::size_t workers) {
    const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
    // With as many workers as cores each OpenCV call runs on its caller's thread only.
    const std::size_t per_worker = std::max<std::size_t>(1, cores / std::max<std::size_t>(1, workers));
    cv::setNumThreads(per_worker <= 1 ? 1 : static_cast<int>(per_worker));
}

}  // namespace sightline::host
