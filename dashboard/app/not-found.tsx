import Link from 'next/link';

export default function NotFound() {
  return (
    <div className="center-page">
      <div className="state">
        <strong>No such page</strong>
        <Link href="/">Back to the overview</Link>
      </div>
    </div>
  );
}
