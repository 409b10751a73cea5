// Splits an HBase table into REGIONS regions on the row key's 2-hex-digit hash prefix
// (app/stores/history.py), so that conversations spread over regions (and region servers)
// from the first write on. Idempotent: split points that are already region boundaries
// are left alone. Thrift1 (happybase) has no split call, so scripts/hbase.sh runs this:
//   java -cp "CONF_DIR:LIBS/*" SplitTable.java imflow:history 16
// REGIONS divides 256 (2, 4, 8, 16, 32, ...). Waits until the table has them all.

import java.util.HashSet;
import java.util.Set;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.TableName;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;
import org.apache.hadoop.hbase.client.RegionInfo;
import org.apache.hadoop.hbase.util.Bytes;

public class SplitTable {
  public static void main(String[] args) throws Exception {
    TableName table = TableName.valueOf(args[0]);
    int regions = Integer.parseInt(args[1]);
    if (regions < 1 || 256 % regions != 0) {
      throw new IllegalArgumentException("REGIONS must divide 256, not " + regions);
    }
    Configuration conf = HBaseConfiguration.create();
    try (Connection conn = ConnectionFactory.createConnection(conf);
        Admin admin = conn.getAdmin()) {
      for (int i = 1; i < regions; i++) {
        String point = String.format("%02x", i * (256 / regions));
        Set<String> starts = new HashSet<>();
        for (RegionInfo r : admin.getRegions(table)) {
          starts.add(Bytes.toString(r.getStartKey()));
        }
        if (starts.contains(point)) {
          continue;
        }
        admin.split(table, Bytes.toBytes(point));
        long deadline = System.currentTimeMillis() + 60_000;
        while (!starts.contains(point)) {  // a split is asynchronous
          if (System.currentTimeMillis() > deadline) {
            throw new IllegalStateException("split at " + point + " did not finish in 60 s");
          }
          Thread.sleep(100);
          starts.clear();
          for (RegionInfo r : admin.getRegions(table)) {
            if (!r.isSplitParent() && !r.isOffline()) {
              starts.add(Bytes.toString(r.getStartKey()));
            }
          }
        }
      }
      System.out.println(table + ": " + admin.getRegions(table).size() + " regions");
    }
  }
}
