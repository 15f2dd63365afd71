package io.fluxo.delta;

import io.delta.storage.HadoopFileSystemLogStore;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.util.Iterator;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FSDataOutputStreamBuilder;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * A Delta LogStore for S3 that is safe with several writers in different processes.
 *
 * <p>Delta commits version N by creating the log file N.json only if it does not exist yet; the
 * writer that loses gets FileAlreadyExistsException, re-reads the log and retries or reports a
 * conflict. Delta's S3SingleDriverLogStore makes that check with a HEAD request and a lock inside
 * one JVM, so two drivers (two Glue jobs, two local stages) can both "win" and one commit is lost.
 * This store creates the file with S3's conditional PUT (If-None-Match: *), through S3A's
 * conditional-create option: exactly one writer of a version succeeds, on AWS S3 and on any
 * S3-compatible store that honours the header (SeaweedFS does). Reads and listings are the
 * Hadoop FileSystem's (S3 listings are strongly consistent).
 */
public class S3ConditionalPutLogStore extends HadoopFileSystemLogStore {
  static final String CONDITIONAL_CREATE = "fs.option.create.conditional.overwrite";

  public S3ConditionalPutLogStore(Configuration hadoopConf) {
    super(hadoopConf);
  }

  @Override
  public void write(Path path, Iterator<String> actions, Boolean overwrite, Configuration hadoopConf)
      throws IOException {
    FileSystem fs = path.getFileSystem(hadoopConf);
    if (!overwrite && fs.exists(path)) {
      throw new FileAlreadyExistsException(path.toString());
    }
    FSDataOutputStreamBuilder<?, ?> builder = fs.createFile(path).overwrite(true).recursive();
    if (!overwrite) {
      builder.must(CONDITIONAL_CREATE, true);
    }
    try (FSDataOutputStream out = builder.build()) {
      while (actions.hasNext()) {
        out.write((actions.next() + "\n").getBytes(StandardCharsets.UTF_8));
      }
    } catch (InterruptedIOException e) {
      throw e;
    } catch (IOException e) {
      if (!overwrite && lostTheRace(e)) {
        FileAlreadyExistsException lost = new FileAlreadyExistsException(path.toString());
        lost.initCause(e);
        throw lost;
      }
      throw e;
    }
  }

  /** S3 answers 412 Precondition Failed when another writer created the object first. */
  static boolean lostTheRace(Throwable e) {
    for (Throwable t = e; t != null; t = t.getCause()) {
      String message = String.valueOf(t.getMessage());
      if (t instanceof org.apache.hadoop.fs.FileAlreadyExistsException
          || message.contains("412")
          || message.contains("PreconditionFailed")
          || message.contains("Precondition Failed")) {
        return true;
      }
    }
    return false;
  }

  @Override
  public Boolean isPartialWriteVisible(Path path, Configuration hadoopConf) {
    return false; // one PUT: the object appears whole or not at all
  }
}
